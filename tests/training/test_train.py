import math

import pytest
import torch

from mincap.errors import NonFiniteLoss
from mincap.nets import models
from mincap.training import engine as train

FAST = train.TrainConfig(epochs=1, batch_size=32, lr=0.05, augment_shift=0)


def test_tiny_net_beats_chance(mnist_small):
    model = train.init_model(models.PRESETS["tiny"], 0)
    result = train.train(model, mnist_small, FAST)
    # Chance is ~10%; one epoch on 2,000 images is far above it.
    assert result.val_acc > 0.5
    acc, preds = train.evaluate(model, mnist_small.val)
    assert acc == pytest.approx(result.val_acc)
    assert preds.shape == (5000,) and preds.dtype == torch.int64


def test_same_seed_same_weights(mnist_small):
    cfg = train.TrainConfig(epochs=1, batch_size=128, augment_shift=1)
    runs = []
    for _ in range(2):
        m = train.init_model(models.PRESETS["tiny"], 3)
        train.train(m, mnist_small, cfg)
        runs.append(m.state_dict())
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k
    other = train.init_model(models.PRESETS["tiny"], 4)
    train.train(other, mnist_small, cfg)
    assert not torch.equal(other.state_dict()["features.0.weight"], runs[0]["features.0.weight"])


def test_callback_gets_val_acc_and_can_stop(mnist_small):
    seen = []

    def on_epoch(stats):
        seen.append(stats)
        return True  # stop after the first epoch

    model = train.init_model(models.PRESETS["mlp-32"], 0)
    result = train.train(model, mnist_small, train.TrainConfig(epochs=3, batch_size=256), on_epoch=on_epoch)
    assert len(seen) == 1 and result.stopped_early
    assert 0.0 <= seen[0].val_acc <= 1.0 and math.isfinite(seen[0].train_loss)


def test_nan_loss_raises(mnist_small):
    model = train.init_model(models.PRESETS["mlp-32"], 0)
    with pytest.raises(NonFiniteLoss):
        train.train(model, mnist_small, train.TrainConfig(epochs=1, lr=1e12, batch_size=256))


def test_shift_moves_pixels_and_keeps_shape():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 4, 4] = 1.0
    out = train._shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.all(out.sum((1, 2, 3)) == 1)  # a centre pixel never falls off an 8x8 with shift 2
    moved = (out[:, 0, 4, 4] == 0).sum()
    assert moved > 32  # 24 of 25 shifts move it
    x3 = torch.rand(5, 3, 6, 6)
    assert train._shift(x3, 0 + 1, torch.Generator().manual_seed(1)).shape == (5, 3, 6, 6)


def test_one_cycle_shape_and_tiny_runs():
    f = train.one_cycle(100)
    assert f(0) == pytest.approx(0.04) and f(25) == pytest.approx(1.0)
    assert f(100) == pytest.approx(1e-3) and f(60) < f(30)
    for total in range(1, 8):  # short runs must not divide by zero
        g = train.one_cycle(total)
        assert all(0 < g(s) <= 1 for s in range(total + 1))


@pytest.mark.parametrize("extra", [[], ["--bits", "4", "--qat-epochs", "1"]])
def test_cli_train_reads_the_test_set_only_with_test_flag(mnist_root, monkeypatch, capsys, extra):
    """`mincap train` helps choose, so it must not read the test set unless --test asks for a report."""
    import json

    from mincap.cli import main
    from mincap.data import registry

    calls = []
    real = registry._load_arrays  # every read of a dataset part goes through here (cached per process)

    def guarded(name, roots, train):
        if not train:
            calls.append(name)
            if "--test" not in argv:
                raise AssertionError("mincap train read the test set without --test")
        return real(name, roots, train)

    monkeypatch.setattr(registry, "_load_arrays", guarded)
    argv = ["train", "--data-dir", str(mnist_root), "--limit", "300", "--n-val", "300", "--epochs", "1",
            "--json", *extra]
    assert main(argv) == 0
    assert calls == [] and "test_acc" not in json.loads(capsys.readouterr().out)
    argv = [*argv, "--test"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(calls) == 1 and 0.0 <= out["test_acc"] <= 1.0 and "not for choosing" in out["test_note"]
