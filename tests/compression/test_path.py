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


def test_ties_go_to_the_more_accurate_then_the_earlier_step():
    # Hand-made steps with known answers at the 99% target: 99.00% exactly counts (>=).
    steps = [_step(0, 8000, 0.9930), _step(1, 6000, 0.9900), _step(2, 6000, 0.9920), _step(3, 6000, 0.9920),
             _step(4, 5999, 0.9899), _step(5, 7000, 0.9990)]
    assert PathResult(steps, 0.99).chosen.index == 2  # 6,000 bits thrice: 99.20% twice, the earlier of those
    assert PathResult(steps, 0.9921).chosen.index == 5  # only steps 0 and 5 reach it; 5 is smaller
    assert PathResult(steps, 0.9899).chosen.index == 4  # the one bit less wins over any accuracy
    assert PathResult(steps[:2], 0.99).chosen.index == 1  # exactly at the target
    assert PathResult(steps[:2], 0.99 + 1e-9).chosen.index == 0


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


def test_a_real_path_at_a_real_target_chooses_its_smallest_step_reaching_it(mnist_small):
    """A path that learns (an MLP at 80% on 1,000 images) with a target its last, most pruned step misses."""
    from mincap.data import Split, Splits
    from mincap.nets.models import parse_arch

    train = Split(mnist_small.train.x[:1000], mnist_small.train.y[:1000])
    val = Split(mnist_small.val.x[:500], mnist_small.val.y[:500])
    splits = Splits(mnist_small.name, train, val, mnist_small.n_classes)
    comp = CompressConfig(bits=4, qat_epochs=1, quantizer="lsq", prune_finetune_epochs=1)
    target = 0.75
    res = compression_path(parse_arch("mlp-32"), splits, TrainConfig(epochs=2, batch_size=50, lr=0.01), comp,
                           steps="sparsity=0.5;bits=2;prune=0.5", target=target)
    assert len({s.artifact_bits for s in res.steps}) == len(res.steps)  # no ties here: one answer
    by_size = sorted(res.steps, key=lambda s: s.artifact_bits)
    assert by_size[0].val_acc < target <= max(s.val_acc for s in res.steps), \
        [(s.artifact_bits, s.val_acc) for s in res.steps]  # the target is real: it rules the smallest out
    chosen = res.chosen
    assert chosen.val_acc >= target and chosen is not by_size[0]
    # the first step reaching the target, walking up from the smallest
    assert chosen is next(s for s in by_size if s.val_acc >= target)
    assert evaluate(artifact.decode(chosen.artifact).model, splits.val)[0] == chosen.val_acc


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
