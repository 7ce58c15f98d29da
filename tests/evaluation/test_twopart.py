"""The two-part code (issue 16): a network's file plus the training labels coded with it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mincap.errors import MincapError
from mincap.evaluation.twopart import OPTIONS, label_code_bits, two_part_code
from mincap.format import container as artifact

ARTIFACTS = Path(__file__).resolve().parents[2] / "studies" / "artifacts"


class _Fixed(torch.nn.Module):
    """Logits given by a table per image index (the image's first pixel), so costs are known exactly."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, x):
        return self.table[(x[:, 0, 0, 0] * 255).round().long()]


def _images(n: int) -> np.ndarray:
    x = np.zeros((n, 1, 2, 2), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return x


def test_uninformed_network_costs_the_uniform_code_plus_the_option_index():
    n, k = 40, 5
    y = np.arange(n) % k
    out = label_code_bits(_Fixed(torch.zeros(n, k)), _images(n), y, k)
    assert out["label_bits"] == pytest.approx(n * math.log2(k) + math.log2(len(OPTIONS)))
    assert out["n_labels"] == n


def test_confident_network_costs_little_and_a_mistake_is_capped():
    n, k = 40, 4
    y = np.arange(n) % k
    table = torch.full((n, k), -20.0)
    table[torch.arange(n), torch.as_tensor(y)] = 20.0
    right = label_code_bits(_Fixed(table), _images(n), y, k)
    # all right and sure: the smallest eps wins, ~n * eps bits plus the option index
    assert right["errors"] == 0 and right["option"]["eps"] == min(e for _, e in OPTIONS)
    assert right["label_bits"] < math.log2(len(OPTIONS)) + 0.01
    wrong = y.copy()
    wrong[0] = (y[0] + 1) % k  # one label the network is sure is something else
    one = label_code_bits(_Fixed(table), _images(n), wrong, k)
    assert one["errors"] == 1
    # capped: the option (T = 1, eps = 0.01) alone costs at most log2(k / eps) for the mistake and
    # -log2(1 - eps) for each right label; the raw softmax would charge ~58 bits for it
    eps = 1e-2
    assert one["label_bits"] <= math.log2(len(OPTIONS)) + math.log2(k / eps) - (n - 1) * math.log2(1 - eps)
    for labels, got in ((y, right), (wrong, one)):  # and both equal the formula computed here
        assert got["label_bits"] == pytest.approx(_label_bits_direct(table.double().numpy(), labels, k)[0], rel=1e-9)


def test_network_for_other_images_is_a_user_error():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 3))
    with pytest.raises(MincapError, match="does not take"):
        label_code_bits(net, _images(4), np.zeros(4, dtype=np.int64), 3)
    with pytest.raises(MincapError, match="as many labels"):
        label_code_bits(net, _images(4), np.zeros(3, dtype=np.int64), 3)


def _label_bits_direct(logits: np.ndarray, y: np.ndarray, k: int) -> tuple[float, int]:
    """Σ −log2 p(y | x) at the cheapest option plus log2 #options, from the docstring's formula
    p = (1 − ε) softmax(z / T) + ε / K in float64 numpy, and the count of arg-max errors."""
    best = math.inf
    for t, eps in OPTIONS:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        soft = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        p = (1 - eps) * soft[np.arange(len(y)), y] + eps / k
        best = min(best, float(-np.log2(p).sum()))
    return best + math.log2(len(OPTIONS)), int((logits.argmax(1) != y).sum())


def test_two_part_code_of_the_committed_99_percent_file(mnist_root, capsys):
    """sep20-99.mincap on MNIST's 60,000 training labels: file bits plus label bits, one code; the
    figures of the record committed beside the file, and on 5,000 labels the code computed here
    from the decoded network's logits."""
    from mincap import data

    blob = artifact.read(ARTIFACTS / "sep20-99.mincap")
    tp = two_part_code(blob, "mnist", data_dir=mnist_root)
    assert tp["artifact_bits"] == 12_104 and tp["n_labels"] == 60_000
    assert tp["total_bits"] == pytest.approx(tp["artifact_bits"] + tp["label_bits"], abs=0.1)
    committed = json.loads((ARTIFACTS / "sep20-99.verify.json").read_text())["two_part"]
    assert {k: tp[k] for k in ("label_bits", "total_bits", "errors", "option")} == \
        {k: committed[k] for k in ("label_bits", "total_bits", "errors", "option")}
    x, y = data.load_arrays("mnist", str(mnist_root), True)
    x, y = x[:5000], y[:5000]
    model = artifact.decode(blob).model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x).float() / 255).double().numpy()
    bits, errors = _label_bits_direct(logits, y, 10)
    part = label_code_bits(model, x, y, 10)
    assert part["errors"] == errors and part["label_bits"] == pytest.approx(bits, rel=1e-9)
    from mincap.cli import main

    assert main(["verify", str(ARTIFACTS / "sep20-99.mincap"), "--data-dir", str(mnist_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["two_part"]["total_bits"] == pytest.approx(tp["total_bits"])
