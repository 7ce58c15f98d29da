"""The dataset ladder (mincap.variants): derivations, shapes, classes, splits, label entropy."""

import math

import numpy as np
import pytest

from mincap import data
from mincap.cli import main
from mincap.data import registry, variants
from mincap.evaluation import holdout

MNIST_DERIVED = {
    "mnist-binary": ((1, 28, 28), 10),
    "mnist-14": ((1, 14, 14), 10),
    "mnist-7": ((1, 7, 7), 10),
    **{f"mnist-k{k}": ((1, 28, 28), k) for k in range(2, 10)},
}


# --- the transforms, on small arrays -------------------------------------------------------


def test_binarize_threshold_is_128_and_above():
    x = np.array([0, 1, 127, 128, 200, 255], dtype=np.uint8).reshape(1, 1, 1, 6)
    assert variants.binarize(x).ravel().tolist() == [0, 0, 0, 255, 255, 255]
    assert variants.binarize(x).dtype == np.uint8


def test_area_downsample_rounds_half_up():
    x = np.array([[1, 2, 10, 10], [3, 4, 10, 11], [0, 0, 255, 255], [0, 1, 255, 254]], dtype=np.uint8)
    out = variants.area_downsample(x.reshape(1, 1, 4, 4), 2)
    # means 2.5 -> 3, 10.25 -> 10, 0.25 -> 0, 254.75 -> 255
    assert out.reshape(2, 2).tolist() == [[3, 10], [0, 255]] and out.dtype == np.uint8
    with pytest.raises(ValueError):
        variants.area_downsample(np.zeros((1, 1, 6, 6), np.uint8), 4)


def test_first_classes_keeps_order():
    x = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
    y = np.array([3, 0, 1, 2, 1, 0], dtype=np.int64)
    xs, ys = variants.first_classes(x, y, 2)
    assert ys.tolist() == [0, 1, 1, 0] and xs.ravel().tolist() == [1, 2, 4, 5]


# --- every variant on real data ------------------------------------------------------------


def test_ladder_is_registered():
    for name in variants.LADDER:
        assert name in data.DATASETS
    for name, (_, k) in MNIST_DERIVED.items():
        assert data.DATASETS[name].n_classes == k
    assert data.DATASETS["digits"].n_classes == 10


@pytest.mark.parametrize("name", sorted(MNIST_DERIVED))
def test_mnist_variant_shapes_classes_determinism(name, mnist_root):
    shape, k = MNIST_DERIVED[name]
    info = data.DATASETS[name]
    mx, my = data.load_arrays("mnist", str(mnist_root), True)
    for train in (True, False):
        with registry.test_door():  # the loaders themselves, below mincap.evaluation.holdout's door
            x, y = info.load_arrays(mnist_root, train)
            x2, y2 = info.load_arrays(mnist_root, train)  # derived again, not from a cache
        assert x is not x2 and np.array_equal(x, x2) and np.array_equal(y, y2)
        assert x.dtype == np.uint8 and y.dtype == np.int64 and x.shape[1:] == shape
        assert x.shape[0] == y.shape[0]
        assert sorted(np.unique(y).tolist()) == list(range(k))
    if name.startswith("mnist-k"):
        x, y = info.load_arrays(mnist_root, True)
        assert len(y) == int((my < k).sum()) and np.array_equal(x, mx[my < k])
    # its own train / validation split: disjoint, covering, the images of the derived set
    n = len(data.load_arrays(name, str(mnist_root), True)[1])
    tr, va = data.split_indices(n, 2000, 0)
    assert not set(tr.tolist()) & set(va.tolist()) and len(tr) + len(va) == n
    s = data.load(name, root=mnist_root, n_val=2000)
    xa, ya = data.load_arrays(name, str(mnist_root), True)
    assert np.array_equal(s.val.x.numpy(), xa[va]) and np.array_equal(s.train.y.numpy(), ya[tr])
    assert s.n_classes == k and s.in_shape == shape


@pytest.mark.parametrize("name", ["mnist-binary", "mnist-14", "mnist-7"])
def test_derived_variants_preserve_labels(name, mnist_root, part):
    for train in (True, False):
        _, my = part("mnist", str(mnist_root), train)
        _, y = part(name, str(mnist_root), train)
        assert np.array_equal(y, my)


def test_downsample_and_binary_values(mnist_root):
    mx, _ = holdout.test_arrays("mnist", str(mnist_root))
    x7, _ = holdout.test_arrays("mnist-7", str(mnist_root))
    x14, _ = holdout.test_arrays("mnist-14", str(mnist_root))
    xb, _ = holdout.test_arrays("mnist-binary", str(mnist_root))
    img = mx[123, 0].astype(float)
    want7 = np.floor(img.reshape(7, 4, 7, 4).mean(axis=(1, 3)) + 0.5)
    assert np.array_equal(x7[123, 0], want7.astype(np.uint8))
    want14 = np.floor(img.reshape(14, 2, 14, 2).mean(axis=(1, 3)) + 0.5)
    assert np.array_equal(x14[123, 0], want14.astype(np.uint8))
    assert set(np.unique(xb).tolist()) == {0, 255}
    assert np.array_equal(xb == 255, mx >= 128)


def test_mnist_k2_label_entropy_is_one_bit(mnist_root, tmp_path, monkeypatch):
    from mincap import entropy

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    est = entropy.estimate("mnist-k2", "labels", root=mnist_root, use_cache=False)
    _, y = data.load_arrays("mnist-k2", str(mnist_root), True)
    p = float((y == 0).mean())
    # 5,923 zeros vs 6,742 ones: H = 0.997; within sampling error of log2 2 = 1 bit.
    assert est.n_examples == 12665 and abs(est.bits_per_example - 1.0) < 0.005
    assert est.bits_per_example == pytest.approx(-(p * math.log2(p) + (1 - p) * math.log2(1 - p)))


def test_entropy_command_on_a_variant(mnist_root, tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rc = main(["entropy", "mnist-7", "--estimator", "labels", "--estimator", "asker", "--json", "--no-cache",
               "--data-dir", str(mnist_root)])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["estimator"] for r in rows] == ["labels", "asker"]
    assert rows[0]["bits_per_example"] == pytest.approx(3.3199, abs=1e-3)  # MNIST's labels, unchanged
    assert 0 < rows[1]["bits_per_example"] < 49  # 7x7 = 49 pixels, each contributes < 1 bit


# --- digits --------------------------------------------------------------------------------


def test_digits_split_is_stratified_disjoint_and_fixed():
    from sklearn.datasets import load_digits

    xt, yt = variants.digits_arrays(True)
    xs, ys = variants.digits_arrays(False)
    assert xt.shape == (1438, 1, 8, 8) and xs.shape == (359, 1, 8, 8)
    assert xt.dtype == np.uint8 and xt.max() == 255 and xt.min() == 0 and yt.dtype == np.int64
    d = load_digits()
    mask = variants._digits_split(d.target)
    assert mask.sum() == 359
    # disjoint by index and together the whole set, in sklearn's order
    assert np.array_equal(ys, d.target[mask]) and np.array_equal(yt, d.target[~mask])
    full = np.rint(d.images * 255 / 16).astype(np.uint8)[:, None]
    assert np.array_equal(xs, full[mask]) and np.array_equal(xt, full[~mask])
    counts = np.bincount(ys, minlength=10)
    assert all(abs(c - 0.2 * n) <= 0.5 for c, n in zip(counts, np.bincount(d.target)))
    xs2, ys2 = variants.digits_arrays(False)
    assert np.array_equal(xs, xs2) and np.array_equal(ys, ys2)


def test_digits_through_the_registry(tmp_path):
    s = data.load("digits", root=tmp_path, n_val=300)  # no files needed: sklearn's bundled copy
    te = holdout.load_test("digits", root=tmp_path)
    assert s.in_shape == (1, 8, 8) and s.n_classes == 10
    assert len(s.train) == 1138 and len(s.val) == 300 and len(te) == 359
    tr, va = data.split_indices(1438, 300, 0)
    assert not set(tr.tolist()) & set(va.tolist())
