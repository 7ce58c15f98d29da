"""train_compressed end to end on 2,000 real MNIST images, and the CLI around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mincap.compression.qat import train_compressed
from mincap.config import CompressConfig, TrainConfig
from mincap.format import container as artifact
from mincap.nets.models import PRESETS
from mincap.training.engine import evaluate

ARCH = '{"family":"cnn","convs":[[8,3,1,2,1],[12,3,1,1,1],[16,3,1,2,1],[24,3,1,1,0]],"batch_norm":true,"head":"gap"}'
CFG = TrainConfig(epochs=2, batch_size=100, lr=0.03, seed=0)


@pytest.fixture(scope="module")
def small(mnist_small):
    """2,000 train and 1,000 validation images: fast enough for every commit."""
    from mincap.data import Split, Splits

    val = Split(mnist_small.val.x[:1000], mnist_small.val.y[:1000])
    return Splits(mnist_small.name, mnist_small.train, val, mnist_small.n_classes)


@pytest.fixture(scope="module")
def compressed(small):
    return train_compressed(PRESETS["tiny"], small, CFG, CompressConfig(bits=4, qat_epochs=1))


def test_written_file_decodes_to_the_evaluated_network(compressed, small, tmp_path):
    res = compressed
    p = artifact.write(tmp_path / "m.mincap", res.artifact)
    dec = artifact.decode(artifact.read(p))
    assert dec.spec == res.spec
    x = small.val.x[:500].float() / 255
    with torch.no_grad():
        a, b = res.model(x), dec.model(x)
    assert torch.equal(a, b)  # bit-exact logits, hence identical predictions
    acc, preds = evaluate(dec.model, small.val)
    assert acc == res.val_acc
    assert res.val_acc > 0.2  # it learned something (40 steps only; chance is 0.1)
    assert res.size["artifact_bits"] == 8 * len(res.artifact)
    assert res.size["n_params"] == sum(p.numel() for p in dec.model.parameters())
    # The in-memory QAT model (BN unfolded, float32 scales) agrees on almost every prediction.
    assert abs(res.qat_val_acc - res.val_acc) < 0.01


def test_quantized_artifact_is_much_smaller_than_float(compressed):
    bits = compressed.size["artifact_bits"]
    assert bits < 0.25 * 32 * compressed.size["n_params"]
    assert bits <= compressed.size["nominal_bits"] + 200


def test_prune_and_sparsity_pipeline(small):
    comp = CompressConfig(bits=3, qat_epochs=1, prune_ratio=0.4, prune_steps=2, prune_finetune_epochs=1,
                          sparsity=0.3, prune_criterion="taylor")
    seen = []
    res = train_compressed(PRESETS["tiny"], small, TrainConfig(epochs=1, batch_size=256), comp,
                           on_epoch=seen.append)
    assert len(seen) == len(res.history) == 1 + 2 + 1
    # Every conv layer shrank (a list `<` would pass if only the first did), to about 60% in all.
    got = [c.channels for c in res.spec.convs]
    assert all(g < o for g, o in zip(got, [6, 12, 16], strict=True)), got
    assert sum(got) <= round(0.6 * (6 + 12 + 16)) + len(got), got  # one channel of rounding per layer
    assert res.size["n_nonzero"] < 0.8 * res.size["n_params"]


def test_on_epoch_true_stops_early(small):
    res = train_compressed(PRESETS["tiny"], small, TrainConfig(epochs=5, batch_size=512),
                           CompressConfig(bits=4, qat_epochs=1), on_epoch=lambda s: True)
    assert len(res.history) == 1


def test_cli_train_writes_artifact_and_verify_reads_it(mnist_root, tmp_path, capsys):
    from mincap.cli import main

    out = tmp_path / "t.mincap"
    rc = main(["train", "--data-dir", str(mnist_root), "--limit", "500", "--n-val", "500", "--epochs", "1", "--bits-per-layer",
               "8,4,4,6", "--qat-epochs", "1", "-o", str(out), "--json", "--test"])
    assert rc == 0
    trained = json.loads(capsys.readouterr().out)
    assert main(["verify", str(out), "--data-dir", str(mnist_root), "--n-val", "500", "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["artifact_bits"] == trained["artifact_bits"] == 8 * out.stat().st_size
    assert verified["test_acc"] == trained["test_acc"]
    assert verified["val_acc"] == trained["val_acc"]  # the same split, the same decoded network
    assert [row["bits"] for row in verified["layers"]] == [8, 4, 4, 6]
    for key in ("n_params", "n_nonzero", "nominal_bits", "layers"):
        assert key in verified
    assert main(["verify", str(out), "--data-dir", str(mnist_root)]) == 0
    assert "artifact" in capsys.readouterr().out
    assert main(["train", "--data-dir", str(mnist_root), "--bits-per-layer", "4,4", "--limit", "500"]) == 2



def test_verify_no_test_reads_no_test_image(mnist_root, monkeypatch, capsys):
    """`mincap verify --no-test`: size and validation accuracy, and the one door to the test set
    (holdout.load_test) is never opened; without the flag it is."""
    from mincap.cli import main
    from mincap.evaluation import holdout

    opened = []
    real = holdout.load_test
    monkeypatch.setattr(holdout, "load_test", lambda *a, **k: opened.append(1) or real(*a, **k))
    f = ARTIFACTS / "sep16-99.mincap"
    assert main(["verify", str(f), "--data-dir", str(mnist_root), "--no-test", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "test_acc" not in out and out["val_acc"] > 0.98 and out["artifact_bits"] == 8 * f.stat().st_size
    assert opened == []
    assert main(["verify", str(f), "--data-dir", str(mnist_root), "--no-test"]) == 0
    assert "validation accuracy" in capsys.readouterr().out and opened == []
    assert main(["verify", str(f), "--data-dir", str(mnist_root), "--json"]) == 0
    assert "test_acc" in json.loads(capsys.readouterr().out) and opened == [1]


ARTIFACTS = Path(__file__).resolve().parents[2] / "studies" / "artifacts"
OLD = ARTIFACTS / "mnist-15640.mincap"  # the hand-built file of issue 4: 98.94% on validation, not a 99% network


def test_old_hand_built_artifact_is_below_the_99_percent_rule(mnist_root, capsys):
    """The rule is validation accuracy (the split the studies use) and artifact bits; this file misses 99%."""
    from mincap.cli import main

    assert main(["verify", str(OLD), "--data-dir", str(mnist_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["artifact_bits"] == 8 * OLD.stat().st_size == 15_640
    assert out["n_val"] == 5000 and out["split_seed"] == 0
    assert abs(out["val_acc"] - 0.9894) < 1e-4 and out["val_acc"] < 0.99


def test_issue14_file_is_a_99_percent_network_in_at_most_10000_bits(mnist_root, capsys):
    """studies/artifacts/sep16-99.mincap: 8,528 bits, 99.16% on the studies' validation split.

    The issue's rule, checked on the file: the decoded network reaches 99.0% on validation in
    at most 10,000 bits, and its size is 8 x the file's length (format version 3: depthwise biases
    folded away, one scale per layer where no batch norm follows)."""
    from mincap.cli import main

    f = ARTIFACTS / "sep16-99.mincap"
    assert f.read_bytes()[2] == 3
    assert main(["verify", str(f), "--data-dir", str(mnist_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["artifact_bits"] == 8 * f.stat().st_size == 8_528 <= 10_000
    assert out["n_val"] == 5000 and out["split_seed"] == 0
    assert out["val_acc"] >= 0.99 and abs(out["val_acc"] - 0.9916) < 1e-4
    assert out["n_params"] == 1770 and out["spec"]["convs"][1] == [16, 3, 1, 1, 0, 1]


def test_separable_artifact_is_a_99_percent_network_by_the_rule(mnist_root, capsys):
    """studies/artifacts/sep20-99.mincap: 12,104 bits, 99.04% on the studies' validation split."""
    from mincap.cli import main

    f = ARTIFACTS / "sep20-99.mincap"
    assert main(["verify", str(f), "--data-dir", str(mnist_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["artifact_bits"] == 8 * f.stat().st_size == 12_104
    assert out["n_val"] == 5000 and out["split_seed"] == 0
    assert out["val_acc"] >= 0.99 and abs(out["val_acc"] - 0.9904) < 1e-4
    assert sum(c[5:] == [1] for c in out["spec"]["convs"]) == 4  # four separable blocks


def test_reexport_keeps_the_codes_and_shrinks_with_the_side_bits(compressed, small):
    """Re-encoding the side at B bits changes the network by that rounding only: the same codes, each
    bias within half a B-bit step of its 8-bit value, each scale within half a step of the exponent
    grid (2^side_shift(B) 32nds of an octave), and at 8 bits exactly the same network."""
    import numpy as np

    from mincap.format.writer import reexport

    res = compressed
    old = artifact.decode(res.artifact)
    assert len(reexport(res.artifact, 8)) <= len(res.artifact)  # version 5 only where it is shorter
    sizes = []
    for b in (8, 6, 4):
        data = reexport(res.artifact, b)
        dec = artifact.decode(data)
        assert dec.spec == old.spec
        assert all((d.codes == o.codes).all() for d, o in zip(dec.layers, old.layers))
        lim, grid = 2 ** (b - 1) - 1, 2 ** max(0, 7 - b)  # the bias range, the exponent grid at b bits
        for d, o in zip(dec.layers, old.layers):
            assert d.compact and o.compact  # every layer of this network is symmetric per channel
            bias = o.side.bias().astype(np.float64)
            step = np.abs(bias).max() / lim * (1 + 2.0 ** -10)  # the step: max |bias| / lim, up to float16
            assert np.abs(d.side.bias() - bias).max() <= step / 2 + 1e-7
            octaves = np.abs(np.log2(d.side.scale().astype(np.float64) / o.side.scale()))
            assert octaves.max() <= grid / 64 * (1 + 1e-5)  # half a grid step (one step: grid / 32 octave)
            assert (octaves > 0).any() == (grid > 1)  # at 8 and 7 bits the exponents are kept as they are
        if b == 8:  # nothing to round: the same decoded weights and biases, the same accuracy
            for d, o in zip(dec.layers, old.layers):
                assert np.array_equal(d.float_weight(), o.float_weight()) and np.array_equal(d.side.bias(), o.side.bias())
            assert evaluate(dec.model, small.val)[0] == res.val_acc
        sizes.append(len(data))
    assert sizes[0] > sizes[1] > sizes[2]
