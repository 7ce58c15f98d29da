"""One-shot trials: a trial's file decodes to the accuracy it records; promotion records both."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest
from oneshot_data import TINY, synthetic_splits
from optuna.artifacts import FileSystemArtifactStore

from mincap.format.container import decode
from mincap.nets.models import Spec
from mincap.oneshot.score import Scored
from mincap.oneshot.trainer import SupernetRecipe, train_supernet
from mincap.oneshot.trial import OneshotObjective, OneshotSettings, better
from mincap.training.engine import evaluate

RECIPE = SupernetRecipe(epochs=3, batch_size=64, qat_fraction=0.34)


@pytest.fixture(scope="module")
def trained():
    splits = synthetic_splits()
    return train_supernet(TINY, splits, RECIPE, use_cache=False, progress=False), splits


@pytest.fixture(scope="module")
def trained_flatten():
    splits = synthetic_splits()
    space = replace(TINY, head="flatten")
    return train_supernet(space, splits, RECIPE, use_cache=False, progress=False), splits


def _study():
    return optuna.create_study(directions=["minimize", "maximize"],
                               sampler=optuna.samplers.RandomSampler(seed=0))


def _file(store, artifact_id: str) -> bytes:
    with store.open_reader(artifact_id) as f:
        return f.read()


def _decoded_acc(data: bytes, splits) -> float:
    return evaluate(decode(data).model, splits.val)[0]


def test_a_trials_file_decodes_to_the_validation_accuracy_recorded_for_it(trained, tmp_path):
    _trials_decode_to_their_scores(*trained, tmp_path)


def test_a_flatten_head_supernets_trials_decode_to_their_scores(trained_flatten, tmp_path):
    run, splits = trained_flatten
    study = _trials_decode_to_their_scores(run, splits, tmp_path)
    assert {Spec.from_json(t.user_attrs["spec"]).head for t in study.trials} == {"flatten"}


def _trials_decode_to_their_scores(run, splits, tmp_path):
    store = FileSystemArtifactStore(str(tmp_path))
    study = _study()
    # 2-bit side information: the decoded network is visibly not the fake-quantized one, so an
    # accuracy measured before decoding would not be the file's
    settings = OneshotSettings(target=0.9, promote=False, side_bits=2)
    study.optimize(OneshotObjective(run, splits, store, settings), n_trials=4)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    for t in study.trials:
        a = t.user_attrs
        data = _file(store, a["artifact_id"])
        assert _decoded_acc(data, splits) == a["val_acc"] == t.values[1]
        assert 8 * len(data) == a["artifact_bits"] == t.values[0]
        assert t.system_attrs["constraints"] == [0.9 - a["val_acc"]]
        assert a["fidelity"] == "oneshot" and a["oneshot"]["val_acc"] == a["val_acc"]
        assert len(a["bits_per_layer"]) == TINY.n_layers(t.params.get("conv_depth", 2))
        assert a["supernet"] == run.key and "finetune" not in a
    return study


def _params(widths, bits, sparsity=0.0):
    p = {"conv_depth": len(widths), "sparsity": sparsity}
    p.update({f"c{i}": w for i, w in enumerate(widths)})
    p.update({f"bits{i}": b for i, b in enumerate(bits)})
    return p


def test_promising_trials_are_fine_tuned_and_keep_both_scores(trained, tmp_path):
    run, splits = trained
    store = FileSystemArtifactStore(str(tmp_path))
    study = _study()
    # target 0: every trial is feasible, so only "smaller than the smallest feasible so far" decides
    study.enqueue_trial(_params((2, 2), (3, 3, 3, 3)))
    study.enqueue_trial(_params((4, 6, 6), (5,) * 6))  # larger than the first: not promoted
    study.enqueue_trial(_params((2, 2), (2, 2, 2, 2), 0.3))  # smaller again: promoted
    settings = OneshotSettings(target=0.0, finetune_epochs=1)
    study.optimize(OneshotObjective(run, splits, store, settings), n_trials=3)
    first, larger, smaller = study.trials
    bits = [t.user_attrs["artifact_bits"] for t in (larger, first, smaller)]
    assert bits == sorted(bits, reverse=True) and len(set(bits)) == 3
    assert "finetune" in first.user_attrs and "finetune" not in larger.user_attrs
    assert "finetune" in smaller.user_attrs
    assert smaller.user_attrs["n_nonzero"] < smaller.user_attrs["n_params"]  # sparsity 0.3 held
    assert first.user_attrs["sparsity"] == 0.0 and smaller.user_attrs["sparsity"] == 0.3
    for t in (first, smaller):
        a = t.user_attrs
        assert a["fidelity"] in ("oneshot", "finetune")
        assert a[a["fidelity"]]["val_acc"] == a["val_acc"]  # the result is the fidelity it names
        assert _decoded_acc(_file(store, a["artifact_id"]), splits) == a["val_acc"]
        inherited = _file(store, a["oneshot_artifact_id"])
        assert _decoded_acc(inherited, splits) == a["oneshot"]["val_acc"]
        assert a["finetune"]["epochs"] == 1


def _scored(bits: int, acc: float) -> Scored:
    return Scored(b"", None, {"artifact_bits": bits}, acc, 0.0)


def test_the_better_file_is_the_smaller_feasible_one_else_the_more_accurate():
    small_ok, big_ok = _scored(100, 0.991), _scored(200, 0.995)
    small_no, big_no = _scored(90, 0.95), _scored(300, 0.97)
    assert better(small_ok, big_ok, 0.99) is small_ok and better(big_ok, small_ok, 0.99) is small_ok
    assert better(small_no, big_ok, 0.99) is big_ok
    assert better(small_no, big_no, 0.99) is big_no


def _promoted(study) -> list[bool]:
    return ["finetune" in t.user_attrs for t in study.trials]


@pytest.mark.parametrize("front", [True, False])
def test_a_repeated_draw_is_fine_tuned_once_when_only_the_front_is_promoted(trained, tmp_path, front):
    run, splits = trained
    study = _study()
    for _ in range(2):  # the same sub-network twice: the same inherited score
        study.enqueue_trial(_params((2, 2), (3, 3, 3, 3)))
    # an unreachable target within the margin: no feasible file, so only the front decides
    settings = OneshotSettings(target=1.0, promote_margin=1.0, finetune_epochs=1, promote_front=front)
    study.optimize(OneshotObjective(run, splits, FileSystemArtifactStore(str(tmp_path)), settings), n_trials=2)
    a, b = (t.user_attrs["oneshot"] for t in study.trials)
    assert a["artifact_bits"] == b["artifact_bits"] and a["val_acc"] == b["val_acc"]
    assert _promoted(study) == ([True, False] if front else [True, True])


def test_no_trial_is_promoted_before_the_study_holds_promote_after_trials(trained, tmp_path):
    run, splits = trained
    study = _study()
    for widths in ((2, 2), (2, 4), (4, 6)):  # three distinct draws, each on the front when it comes
        study.enqueue_trial(_params(widths, (3, 3, 3, 3)))
    settings = OneshotSettings(target=1.0, promote_margin=1.0, finetune_epochs=1, promote_front=False,
                               promote_after=2)
    study.optimize(OneshotObjective(run, splits, FileSystemArtifactStore(str(tmp_path)), settings), n_trials=3)
    assert _promoted(study) == [False, False, True]


def test_a_trial_below_the_margin_is_not_promoted(trained, tmp_path):
    run, splits = trained
    study = _study()
    study.enqueue_trial(_params((2, 2), (3, 3, 3, 3)))
    settings = OneshotSettings(target=1.0, promote_margin=0.0, finetune_epochs=1)
    study.optimize(OneshotObjective(run, splits, FileSystemArtifactStore(str(tmp_path)), settings), n_trials=1)
    assert study.trials[0].user_attrs["oneshot"]["val_acc"] < 1.0 and _promoted(study) == [False]


def test_the_deadline_stops_promotion_and_a_fine_tuning_in_progress(trained, tmp_path):
    import time

    run, splits = trained
    store = FileSystemArtifactStore(str(tmp_path))
    settings = OneshotSettings(target=1.0, promote_margin=1.0, finetune_epochs=3)
    study = _study()
    study.enqueue_trial(_params((2, 2), (3, 3, 3, 3)))
    past = OneshotObjective(run, splits, store, settings, deadline=time.time() - 1)
    study.optimize(past, n_trials=1)
    assert _promoted(study) == [False]  # after the deadline nothing is promoted
    # a deadline that passes while the fine-tuning runs (here: as it starts): the epoch in
    # progress ends, then the file is scored
    from mincap.oneshot.score import score_subnet
    from mincap.oneshot.space import SubnetConfig

    cfg = SubnetConfig((2, 2), (3, 3, 3, 3), 0.0)
    scored, model = score_subnet(run.net, cfg, splits, calib_images=200)
    soon = OneshotObjective(run, splits, store, settings, deadline=time.time())
    tuned, epochs = soon.finetune(model, cfg)
    assert epochs == 1 and tuned.artifact_bits > 0
    late = OneshotObjective(run, splits, store, settings, deadline=time.time() + 3600)
    _, model = score_subnet(run.net, cfg, splits, calib_images=200)
    assert late.finetune(model, cfg)[1] == 3
