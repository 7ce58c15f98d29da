"""The supernet cache: keyed by dataset, split, space, recipe; loaded, not retrained; NaN fails."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch
from oneshot_data import TINY, synthetic_splits

from mincap.errors import NonFiniteLoss
from mincap.oneshot import trainer
from mincap.oneshot.trainer import SupernetRecipe, supernet_key, train_supernet

RECIPE = SupernetRecipe(epochs=2, batch_size=64, qat_fraction=0.5)


def test_cache_key_changes_with_split_space_and_recipe():
    def key(dataset="mnist", space=TINY, recipe=RECIPE, **kw):
        return supernet_key(dataset, space, recipe, **{"n_val": 5000, "split_seed": 0, **kw})

    base = key()
    assert base == key()
    others = [
        key(split_seed=1), key(n_val=4000), key(limit=100), key(split_fp="ab"),
        key(dataset="fashion-mnist"),
        key(space=replace(TINY, widths=(2, 8))), key(space=replace(TINY, depth=(2, 2))),
        key(space=replace(TINY, bits=(3, 5))), key(space=replace(TINY, separable=False)),
        key(space=replace(TINY, per_channel=True)),
        key(recipe=replace(RECIPE, epochs=3)), key(recipe=replace(RECIPE, seed=1)),
        key(recipe=replace(RECIPE, distill_weight=1.0)),
    ]
    assert base not in others and len(set(others)) == len(others)


def _no_training(*a, **k):
    raise AssertionError("a cached supernet must not be trained again")


def test_a_trained_supernet_is_loaded_and_another_split_trains_anew(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    splits = synthetic_splits()
    first = train_supernet(TINY, splits, RECIPE, root=tmp_path, progress=False)
    assert first.cache_path is not None and first.cache_path.is_file() and len(first.history) == 2
    assert [h["phase"] for h in first.history] == ["float", "qat"]
    monkeypatch.setattr(trainer, "_step", _no_training)
    again = train_supernet(TINY, splits, RECIPE, root=tmp_path, progress=False)
    assert again.resumed_epoch == 2 and again.cache_path == first.cache_path
    for k, v in first.net.state_dict().items():
        if torch.is_tensor(v):
            assert torch.equal(v, again.net.state_dict()[k]), k
    assert again.net.steps_ready() == first.net.steps_ready() > 0  # the learned steps came back
    with pytest.raises(AssertionError, match="cached supernet"):  # another split: another key
        train_supernet(TINY, synthetic_splits(seed=1), RECIPE, root=tmp_path, progress=False)


# The stand-in step never steps the optimizer: PyTorch warns about the schedule.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_a_nan_loss_is_a_clear_error_and_saves_no_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    monkeypatch.setattr(trainer, "_step", lambda *a, **k: torch.tensor([float("nan"), 0.5]))
    with pytest.raises(NonFiniteLoss, match="nan in epoch 1"):
        train_supernet(TINY, synthetic_splits(), RECIPE, root=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.pt"))


def test_progress_is_plain_lines_when_not_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    train_supernet(TINY, synthetic_splits(), RECIPE, use_cache=False)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("mincap: training the supernet (2 epochs")
    assert err[1].startswith("mincap: supernet epoch 1/2 (float): loss ")
    assert err[2].startswith("mincap: supernet epoch 2/2 (qat): loss ")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_rich_bar_on_a_terminal():
    out = _Terminal()
    train_supernet(TINY, synthetic_splits(), RECIPE, use_cache=False, stream=out)
    text = out.getvalue()
    assert "supernet 2/2 qat" in text and "mincap: supernet epoch" not in text


def test_largest_epochs_train_the_largest_alone_first():
    recipe = replace(RECIPE, epochs=3, largest_epochs=1, qat_fraction=0.34)
    run = train_supernet(TINY, synthetic_splits(), recipe, use_cache=False, progress=False)
    assert [h["phase"] for h in run.history] == ["largest", "float", "qat"]
    assert run.history[0]["loss_children"] == 0.0 < run.history[1]["loss_children"]


def test_a_setting_added_later_keeps_the_key_at_its_default():
    """A recipe or space field added after FORMAT 1 enters the key only away from its default:
    the cached supernets (the committed study's among them) stay valid when a setting is added."""
    from dataclasses import dataclass

    from mincap.oneshot.space import SupernetSpace

    @dataclass(frozen=True)
    class LaterRecipe(SupernetRecipe):
        new_knob: float = 0.0

    @dataclass(frozen=True)
    class LaterSpace(SupernetSpace):
        new_choice: tuple = (1, 2)

    def key(space=TINY, recipe=RECIPE):
        return supernet_key("mnist", space, recipe, n_val=5000, split_seed=0)

    assert key(recipe=LaterRecipe(**RECIPE.to_dict())) == key()
    assert key(recipe=LaterRecipe(**RECIPE.to_dict(), new_knob=0.5)) != key()
    assert key(space=LaterSpace(**TINY.to_dict())) == key()
    assert key(space=LaterSpace(**TINY.to_dict(), new_choice=(3,))) != key()
    assert key(recipe=replace(RECIPE, seed=RECIPE.seed)) == key()  # a FORMAT-1 field: always in the key ...
    assert key(recipe=replace(RECIPE, lr=RECIPE.lr * 2)) != key()  # ... and any change of it changes it


@pytest.mark.parametrize("study", ["mnist-99-oneshot", "mnist-99-oneshot-e80", "mnist-99-oneshot-near",
                                   "mnist-99-oneshot-near-ps"])
def test_the_committed_one_shot_study_finds_its_committed_supernet(mnist_root, study):
    """The key of each committed one-shot study's supernet on real MNIST is the committed file's name
    (a key change would retrain 16-90 minutes of supernet and orphan the committed one)."""
    from pathlib import Path

    from mincap.config.study import load_study_file
    from mincap.oneshot.trainer import supernet_name
    from mincap.search.oneshot_run import _args, load_splits

    studies = Path(__file__).resolve().parents[2] / "studies"
    cfg = load_study_file(studies / f"{study}.toml")
    splits = load_splits(cfg, data_dir=str(mnist_root))
    space, recipe, split = _args(cfg, splits)
    committed = [p.name for p in (studies / f"{study}.supernet").glob("*.pt")]
    assert committed == [supernet_name(splits, space, recipe, **split)]
