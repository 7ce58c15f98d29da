"""bench/tying_probe.py: its size count is the networks' own, and a tiny run writes and resumes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import tying_probe  # noqa: E402

from mincap.nets.models import build  # noqa: E402


def _weights_and_channels(model: nn.Module) -> tuple[int, int]:
    """(conv/linear weights, their output channels) of a module, each distinct layer once."""
    w = ch = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w += m.weight.numel()
            ch += m.weight.shape[0]
    return w, ch


def test_the_untied_count_is_the_built_networks_weights_with_a_scale_and_bias_per_channel():
    model = build(tying_probe.untied_spec(8, 12, 4))
    w, ch = _weights_and_channels(model)
    assert tying_probe.stored_untied(8, 12, 4) == (w, 2 * ch)


def test_the_tied_count_stores_the_shared_block_once_and_a_scale_and_bias_per_application():
    model = tying_probe.TiedSeparable(20, 4)
    w, ch = _weights_and_channels(model)  # the shared dw/pw are one module each: counted once
    stored = tying_probe.stored_tied(20, 4)
    assert stored[0] == w
    # per application: the pointwise output's folded batch norm (2 x 20); the stem, the shared
    # depthwise and the head once
    assert stored[1] == 2 * ch + 2 * 20 * (4 - 1)
    assert sum(p.numel() for p in model.bns.parameters()) == 2 * 20 * 4


def test_the_tied_width_is_the_widest_within_the_untied_bits():
    target = tying_probe.bits_of(tying_probe.stored_untied(8, 12, 4), 4, 6)
    c = tying_probe.tied_width(target, 4, 4, 6)
    assert tying_probe.bits_of(tying_probe.stored_tied(c, 4), 4, 6) <= target
    assert tying_probe.bits_of(tying_probe.stored_tied(c + 1, 4), 4, 6) > target


def test_a_tiny_probe_writes_both_kinds_and_resumes(tmp_path, mnist_root, capsys):
    out = tmp_path / "tying.json"
    args = ["--epochs", "1", "--limit", "300", "--seeds", "0", "--c", "4", "--out", str(out),
            "--data-dir", str(mnist_root)]
    assert tying_probe.main(args) == 0
    r = json.loads(out.read_text())
    assert [(x["kind"], x["seed"]) for x in r["runs"]] == [("untied", 0), ("tied", 0)]
    assert r["kinds"]["tied"]["stored_bits"] <= r["kinds"]["untied"]["stored_bits"]
    assert all(0.0 <= x["val_acc"] <= 1.0 for x in r["runs"])
    capsys.readouterr()
    assert tying_probe.main(args + ["--seeds", "0,1"]) == 0  # seed 0 is in the file: only seed 1 trains
    trained = [line for line in capsys.readouterr().out.splitlines() if " seed " in line]
    assert len(trained) == 2 and all("seed 1" in line for line in trained)
    assert len(json.loads(out.read_text())["runs"]) == 4
