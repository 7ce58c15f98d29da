"""The compression path: every step decoded and evaluated on validation; the smallest feasible step chosen."""

from __future__ import annotations

import pytest

from mincap.compression.path import PathResult, PathStep, compression_path
from mincap.config import CompressConfig, TrainConfig, parse_steps
from mincap.errors import MincapError
from mincap.format import container as artifact
from mincap.nets.models import PRESETS
from mincap.training.engine import evaluate


def _step(i, bits, acc):
    return PathStep(i, f"s{i}", bits, acc, b"", [])


def test_chosen_is_the_smallest_step_meeting_the_target():
    steps = [_step(0, 9000, 0.992), _step(1, 7000, 0.991), _step(2, 5000, 0.985), _step(3, 6000, 0.990)]
    assert PathResult(steps, 0.99).chosen.index == 3  # not the last step, not the first feasible one
    assert PathResult(steps, 0.9905).chosen.index == 1
    assert PathResult(steps, 0.98).chosen.index == 2
    assert PathResult(steps, 0.995).chosen is None
    assert PathResult(steps, None).chosen is None


def test_parse_steps():
    assert parse_steps("sparsity=0.3; prune=0.2,bits=2;bits=4:2:2:4") == [
        {"sparsity": 0.3}, {"prune": 0.2, "bits": (2,)}, {"bits": (4, 2, 2, 4)}]
    assert parse_steps("side=6;sparsity=0.5,side=4") == [{"side": 6}, {"sparsity": 0.5, "side": 4}]
    for bad in ("", "sparsity=1.5", "bits=9", "width=3", "prune", "side=1", "side=9", "side=6.5"):
        with pytest.raises(MincapError):
            parse_steps(bad)


@pytest.fixture(scope="module")
def path(mnist_small):
    from mincap.data import Split, Splits

    train = Split(mnist_small.train.x[:1000], mnist_small.train.y[:1000])
    val = Split(mnist_small.val.x[:500], mnist_small.val.y[:500])
    splits = Splits(mnist_small.name, train, val, mnist_small.n_classes)
    comp = CompressConfig(bits=4, qat_epochs=1, quantizer="lsq", prune_finetune_epochs=1)
    res = compression_path(PRESETS["tiny"], splits, TrainConfig(epochs=2, batch_size=100, lr=0.03), comp,
                           steps="sparsity=0.5;bits=2;prune=0.5", target=0.0)
    return res, splits


def test_every_step_is_recorded_and_decodes_to_its_accuracy(path):
    res, splits = path
    assert [s.index for s in res.steps] == [0, 1, 2, 3]
    assert res.steps[2].layer_bits == [2, 2, 2, 2] and res.steps[0].layer_bits == [4, 4, 4, 4]
    assert res.steps[3].removed == {0: 3, 1: 6, 2: 8}
    for s in res.steps:
        dec = artifact.decode(s.artifact)
        assert dec.size["artifact_bits"] == s.artifact_bits == 8 * len(s.artifact)
        assert evaluate(dec.model, splits.val)[0] == s.val_acc
    assert res.steps[3].artifact_bits < res.steps[1].artifact_bits < res.steps[0].artifact_bits


def test_path_chooses_the_smallest_feasible_step(path):
    res, splits = path
    for target in sorted({s.val_acc for s in res.steps}):
        res.target = target
        feasible = [s for s in res.steps if s.val_acc >= target]
        assert res.chosen.artifact_bits == min(s.artifact_bits for s in feasible)
        assert evaluate(artifact.decode(res.chosen.artifact).model, splits.val)[0] == res.chosen.val_acc


def test_side_steps_re_export_without_training_and_hold_for_later_steps(mnist_small):
    from mincap.data import Split, Splits
    from mincap.training.experiment import Experiment, total_epochs

    train = Split(mnist_small.train.x[:600], mnist_small.train.y[:600])
    val = Split(mnist_small.val.x[:300], mnist_small.val.y[:300])
    splits = Splits(mnist_small.name, train, val, mnist_small.n_classes)
    comp = CompressConfig(bits=4, qat_epochs=1, quantizer="lsq", prune_finetune_epochs=1)
    epochs = []
    res = compression_path(PRESETS["tiny"], splits, TrainConfig(epochs=1, batch_size=100, lr=0.03), comp,
                           steps="side=6;sparsity=0.5;side=4", target=0.0, on_epoch=lambda st: epochs.append(st))
    assert [s.side_bits for s in res.steps] == [8, 6, 6, 4]
    assert len(epochs) == 2  # the training epoch and the sparsity step's fine-tuning: side steps train nothing
    d0, d1 = artifact.decode(res.steps[0].artifact), artifact.decode(res.steps[1].artifact)
    for a, b in zip(d0.layers, d1.layers):  # the same weights, their side rounded again
        assert (a.codes == b.codes).all()
    assert res.steps[1].artifact[2] == 5 and res.steps[1].artifact_bits < res.steps[0].artifact_bits
    assert res.steps[3].artifact_bits < res.steps[2].artifact_bits
    for s in res.steps:
        assert evaluate(artifact.decode(s.artifact).model, splits.val)[0] == s.val_acc
    exp = Experiment(train=TrainConfig(epochs=1), compress=comp, path="side=6;sparsity=0.5;side=4")
    assert total_epochs(exp) == 2
