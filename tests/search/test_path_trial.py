"""A trial trained as a compression path: the smallest feasible step, else the most accurate one."""

from dataclasses import replace

from mincap.config import CompressConfig, TrainConfig
from mincap.format.container import decode
from mincap.nets.models import PRESETS
from mincap.search.path_trial import train_trial
from mincap.training.engine import evaluate

CFG = TrainConfig(epochs=1, batch_size=128, augment_shift=0)
COMP = CompressConfig(bits=4, qat_epochs=1, prune_finetune_epochs=1, path="sparsity=0.5;sparsity=0.9;bits=2")


def _spec(splits):
    return PRESETS["mlp-32"].with_data(splits.in_shape, splits.n_classes)


def test_smallest_feasible_step_is_the_result_and_decodes_to_its_accuracy(mnist_small):
    res, rec = train_trial(_spec(mnist_small), mnist_small, CFG, COMP, target=0.5)
    feasible = [s for s in rec["steps"] if s["val_acc"] >= 0.5]
    assert rec["feasible"] and len(rec["steps"]) == 4
    best = min(feasible, key=lambda s: s["artifact_bits"])
    assert rec["chosen"] == best["step"] and res.size["artifact_bits"] == best["artifact_bits"]
    assert res.size["artifact_bits"] == 8 * len(res.artifact)
    acc, _ = evaluate(decode(res.artifact).model, mnist_small.val)
    assert acc == res.val_acc == best["val_acc"]


def test_no_feasible_step_gives_the_most_accurate_and_a_margin_stops_the_path(mnist_small):
    res, rec = train_trial(_spec(mnist_small), mnist_small, CFG, COMP, target=1.01)
    assert not rec["feasible"]
    assert res.val_acc == max(s["val_acc"] for s in rec["steps"])
    _, short = train_trial(_spec(mnist_small), mnist_small, CFG, COMP, target=1.01, stop_margin=0.05)
    assert len(short["steps"]) == 1  # the trained network is below 0.96 already: no shrinking


def test_no_path_is_the_plain_compressed_trial(mnist_small):
    res, rec = train_trial(_spec(mnist_small), mnist_small, CFG, replace(COMP, path=""), target=0.5)
    assert rec is None and res.size["artifact_bits"] == 8 * len(res.artifact)
