"""Progressive shrinking: the children are drawn from the top of each range first, the whole space later."""

from __future__ import annotations

from dataclasses import replace

import pytest
from oneshot_data import TINY, synthetic_splits

from mincap.errors import MincapError
from mincap.oneshot import trainer
from mincap.oneshot.space import SupernetSpace
from mincap.oneshot.supernet import Supernet
from mincap.oneshot.trainer import SupernetRecipe, supernet_key, train_supernet

SPACE = SupernetSpace(widths0=(8, 12), widths=(12, 20), depth=(4, 5), bits=(3, 5))


def test_top_keeps_the_upper_share_of_each_range():
    assert SPACE.top(1.0) == SPACE
    alone = SPACE.top(0.0)  # the largest network only
    assert (alone.widths0, alone.widths, alone.depth, alone.bits) == ((12, 12), (20, 20), (5, 5), (5, 5))
    half = SPACE.top(0.5)  # 3 widths0 choices -> 2, 5 widths -> 3, 2 depths -> 1, 3 bits -> 2
    assert (half.widths0, half.widths, half.depth, half.bits) == ((10, 12), (16, 20), (5, 5), (4, 5))
    assert half.largest() == SPACE.largest() and SPACE.contains(half.smallest(4))
    with pytest.raises(MincapError, match="reach"):
        SPACE.top(1.5)


def test_reach_grows_over_the_shrinking_epochs_then_admits_the_whole_space():
    recipe = SupernetRecipe(epochs=10, largest_epochs=2, shrink_fraction=0.5)  # 4 of 8 sandwich epochs
    assert [recipe.reach(e) for e in range(2, 10)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(SupernetRecipe(epochs=10).reach(e) == 1.0 for e in range(10))
    with pytest.raises(MincapError, match="shrink_fraction"):
        SupernetRecipe(shrink_fraction=1.2)


def test_the_children_of_a_shrinking_epoch_lie_in_the_admitted_space(monkeypatch):
    seen: list[tuple[int, tuple[int, ...]]] = []  # (epoch, widths) of every forward pass
    epoch = [0]
    forward = Supernet.forward

    def spy(self, x, cfg, **kw):
        seen.append((epoch[0], cfg.widths))
        return forward(self, x, cfg, **kw)

    def on_sort(net, opt):  # called once after every float epoch: count the epochs with it
        epoch[0] += 1

    monkeypatch.setattr(Supernet, "forward", spy)
    monkeypatch.setattr(trainer, "sort_channels", on_sort)
    recipe = SupernetRecipe(epochs=3, batch_size=64, qat_fraction=0.0, shrink_fraction=2 / 3)
    run = train_supernet(TINY, synthetic_splits(), recipe, use_cache=False, progress=False)
    assert [h.get("reach") for h in run.history] == [0.3333, 0.6667, None]
    space = run.net.space
    for e, widths in seen:
        admitted = space.top(recipe.reach(e))
        assert admitted.depth[0] <= len(widths) and all(
            w >= admitted.width_choices(i)[0] for i, w in enumerate(widths)), (e, widths)
    # Not vacuous: the first epoch admits the deepest sub-networks only, the last the shallowest too
    # (the sandwich's smallest, every step).
    assert {len(w) for e, w in seen if e == 0} == {3} and 2 in {len(w) for e, w in seen if e == 2}


def test_shrinking_enters_the_cache_key_only_when_set():
    def key(recipe):
        return supernet_key("mnist", TINY, recipe, n_val=5000, split_seed=0)

    base = SupernetRecipe(epochs=2)
    assert key(base) == key(replace(base, shrink_fraction=0.0))
    assert key(base) != key(replace(base, shrink_fraction=0.5))
