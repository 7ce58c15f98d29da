"""The switching prequential code (issue 16): chunk schedule, switch distribution, the code on toy data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mincap import data
from mincap.entropy import SwitchConfig, estimate
from mincap.entropy.switching import Switch, doubling_ends, prequential_switch, switch_code
from mincap.errors import MincapError


def test_doubling_ends_are_the_papers_indexes_then_n():
    # Blier & Ollivier's mnist.py: indexes = floor(10 * 2^k) for k = 0..12, then the rest
    assert doubling_ends(60000, 10) == [10 * 2**k for k in range(13)] + [60000]
    assert doubling_ends(5, 10) == [5]  # fewer examples than the first chunk: one uniform chunk
    assert doubling_ends(100, 3, 3.0) == [3, 9, 27, 81, 100]
    for bad in ((1, 10, 2.0), (100, 0, 2.0), (100, 10, 1.0)):
        with pytest.raises(MincapError):
            doubling_ends(*bad)


def test_switch_with_one_predictor_is_that_predictor():
    lp = np.log2(np.random.default_rng(0).uniform(0.05, 1.0, (50, 1)))
    bits, post = switch_code(lp)
    assert bits == pytest.approx(-lp.sum()) and np.allclose(post, 1.0)


def test_switch_follows_the_better_predictor_and_pays_little():
    """A is right early, B late (the catch-up case): the switch beats both, and any single one by far."""
    n = 400
    good, bad = math.log2(0.9), math.log2(0.1)
    lp = np.empty((n, 2))
    lp[: n // 2] = (good, bad)
    lp[n // 2 :] = (bad, good)
    bits, post = switch_code(lp)
    single = -lp.sum(axis=0)
    best_path = -good * n  # A then B, switching once at the right time
    assert bits < 0.6 * single.min()
    assert best_path < bits < best_path + 30  # the switch's own cost: tens of bits, not hundreds
    assert np.allclose(post.sum(axis=1), 1.0)
    assert post[n // 2 - 1, 0] > 0.99 and post[-1, 1] > 0.99


def test_switch_in_pieces_equals_all_at_once():
    lp = np.log2(np.random.default_rng(1).dirichlet(np.ones(3), 90))
    whole, post = switch_code(lp, 0.99)
    s = Switch(3, 0.99)
    parts = [s.code(lp[a:b]) for a, b in ((0, 10), (10, 40), (40, 90))]
    assert sum(p[0] for p in parts) == pytest.approx(whole)
    assert np.allclose(np.concatenate([p[1] for p in parts]), post)
    with pytest.raises(MincapError):
        switch_code(lp, theta=1.0)
    with pytest.raises(MincapError):
        s.code(lp[:, :2])


# Two small models of growing size, no shift (the toy rule reads fixed pixel positions).
_SMALL = SwitchConfig(archs=('{"family":"mlp","hidden":[]}', '{"family":"mlp","hidden":[32]}'),
                      epochs=20, min_steps=60, lr=0.05, augment_shift=0, batch_size=64)


@pytest.fixture
def one_thread():
    from mincap.training.engine import setup_threads

    setup_threads(1)


def _toy(n: int = 1500, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)
    y = (x[:, 0, 0, 0] > 127).astype(np.int64) * 2 + (x[:, 0, 0, 1] > 127)  # 4 classes, a simple rule
    return x, y, rng


def test_learnable_labels_far_below_uniform(one_thread):
    x, y, _ = _toy()
    r = prequential_switch(x, y, 4, _SMALL)
    assert r.uniform_bits == 2 * len(y)
    assert r.fraction_of_uniform < 0.3  # measured 0.10 (2-core CPU, 1 thread)
    first = r.chunks[0]
    assert (first["start"], first["end"]) == (0, 4) and first["bits"] == pytest.approx(8.0)  # K labels, uniform
    assert [c["end"] for c in r.chunks] == doubling_ends(len(y), 4)
    assert sum(c["bits"] for c in r.chunks) == pytest.approx(r.bits_total)
    last = r.chunks[-1]
    # each chunk costs at most the best single predictor plus the switch's and temperatures' few bits
    for c in r.chunks[1:]:
        assert c["bits"] <= min(c["model_bits"]) + 4 + 2 * 2
    assert len(last["posterior_end"]) == 3 and max(last["posterior_end"][1:]) > 0.9  # a trained model, not uniform


def test_random_labels_stay_near_uniform(one_thread):
    x, _, rng = _toy(800)
    y = rng.integers(0, 4, len(x))
    r = prequential_switch(x, y, 4, _SMALL)
    # the uniform code is one of the switched predictors: nothing learned costs only the
    # temperature indices and the switch's few bits
    assert 0.98 < r.fraction_of_uniform < 1.03


def test_budget_cut_is_flagged_and_still_a_code(one_thread):
    x, y, _ = _toy(300)
    r = prequential_switch(x, y, 4, _SMALL, budget_s=1e-9)
    assert r.budget_hit and r.bits_total == pytest.approx(r.uniform_bits)  # nothing trained: uniform
    with pytest.raises(MincapError, match="budget"):
        prequential_switch(x, y, 4, _SMALL, budget_s=0)
    with pytest.raises(MincapError, match="uint8"):
        prequential_switch(x.astype(np.float32), y, 4, _SMALL)


def test_estimate_registers_caches_and_reuses(one_thread, monkeypatch, tmp_path):
    x, y, _ = _toy(300)
    monkeypatch.setitem(data.DATASETS, "toy", data.DatasetInfo("toy", 4, lambda roots, train: (x, y)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data.registry._load_arrays.cache_clear()
    try:
        root = tmp_path / "data"
        root.mkdir()
        a = estimate("toy", "prequential-switch", root=root, switch_cfg=_SMALL)
        assert not a.cached and a.bits_total < 0.6 * 600 and a.time_s > 0
        assert a.settings["archs"] == list(_SMALL.archs) and a.bounds == ">= info in labels given images"
        assert len(list((root / "mincap-cache" / "entropy").glob("toy-prequential-switch-*.json"))) == 1
        b = estimate("toy", "prequential-switch", root=root, switch_cfg=_SMALL)
        assert b.cached and b.bits_total == pytest.approx(a.bits_total)
    finally:
        data.registry._load_arrays.cache_clear()
