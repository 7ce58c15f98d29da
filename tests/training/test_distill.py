"""Distillation: the teacher cache is keyed by dataset, split and recipe; students learn from it."""

from __future__ import annotations

import pytest
import torch

from mincap.config import TrainConfig
from mincap.data import Split, Splits
from mincap.training import distill

MLP = '{"family":"mlp","hidden":[8]}'


def _splits(seed: int = 0, n: int = 96) -> Splits:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = (torch.rand(n, 1, 6, 6, generator=g) * 60).to(torch.uint8)
    x[torch.arange(n), 0, y, y] = 255  # a learnable signal: one bright pixel per class
    return Splits("synthetic", Split(x[: n - 32], y[: n - 32]), Split(x[n - 32 :], y[n - 32 :]), 3)


def test_teacher_key_changes_with_split_dataset_and_recipe():
    cfg = TrainConfig(epochs=3)
    base = distill.teacher_key("mnist", MLP, cfg, n_val=5000, split_seed=0)
    assert base == distill.teacher_key("mnist", MLP, cfg, n_val=5000, split_seed=0)
    others = [
        distill.teacher_key("mnist", MLP, cfg, n_val=5000, split_seed=1),
        distill.teacher_key("mnist", MLP, cfg, n_val=4000, split_seed=0),
        distill.teacher_key("mnist", MLP, cfg, n_val=5000, split_seed=0, limit=100),
        distill.teacher_key("mnist", MLP, cfg, n_val=5000, split_seed=0, split_fp="ab"),
        distill.teacher_key("fashion", MLP, cfg, n_val=5000, split_seed=0),
        distill.teacher_key("mnist", MLP, TrainConfig(epochs=4), n_val=5000, split_seed=0),
        distill.teacher_key("mnist", '{"family":"mlp","hidden":[9]}', cfg, n_val=5000, split_seed=0),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_teacher_is_trained_once_then_loaded_and_a_new_split_retrains(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    splits = _splits()
    t1 = distill.get_teacher(MLP, splits, epochs=3, root=tmp_path, verbose=False)
    assert t1.cache_path is not None and t1.cache_path.is_file()
    assert 0.0 <= t1.val_acc <= 1.0

    def no_training(*a, **k):
        raise AssertionError("a cached teacher must not be trained again")

    monkeypatch.setattr("mincap.training.distill.train", no_training)  # distill imports train at its top
    t2 = distill.get_teacher(MLP, splits, epochs=3, root=tmp_path, verbose=False)
    assert t2.cache_path == t1.cache_path and t2.val_acc == t1.val_acc
    x = splits.val.x.float() / 255
    assert torch.equal(t1(x), t2(x))
    with pytest.raises(AssertionError, match="cached teacher"):  # another split: another key, trained anew
        distill.get_teacher(MLP, _splits(seed=1), epochs=3, root=tmp_path, verbose=False)


def test_distillation_changes_training_and_weight_zero_does_not():
    from mincap.training.engine import init_model, train

    splits = _splits()
    teacher = distill.get_teacher(MLP, splits, epochs=3, use_cache=False, verbose=False)
    spec = teacher.spec
    runs = {}
    for name, w, t in (("plain", 0.0, None), ("w0", 0.0, teacher), ("kd", 0.7, teacher)):
        m = init_model(spec, 1)
        train(m, splits, TrainConfig(epochs=2, batch_size=16, distill_weight=w), teacher=t)
        runs[name] = m.classifier[-1].weight.detach()
    assert torch.equal(runs["plain"], runs["w0"])
    assert not torch.equal(runs["plain"], runs["kd"])


def test_the_teacher_learns_from_the_train_split_only():
    """Splits hold no test set at all; and with the same train split, other validation images and
    labels give the same teacher weights: validation only scores it."""
    a = _splits()
    g = torch.Generator().manual_seed(7)
    other_val = Split(torch.randint(0, 256, a.val.x.shape, generator=g, dtype=torch.uint8),
                      torch.randint(0, 3, a.val.y.shape, generator=g))
    b = Splits(a.name, a.train, other_val, a.n_classes)
    ta = distill.get_teacher(MLP, a, epochs=2, use_cache=False, verbose=False)
    tb = distill.get_teacher(MLP, b, epochs=2, use_cache=False, verbose=False)
    assert not hasattr(a, "test")
    for (name, pa), pb in zip(ta.state_dict().items(), tb.state_dict().values()):
        assert torch.equal(pa, pb), name
