"""Issue 17's datasets: `mnist-random-N` (memorization: validation = the training set) and `mnist-permuted`."""

import json

import numpy as np
import pytest

from mincap import data
from mincap.cli import main
from mincap.config.study import parse_study
from mincap.data import variants
from mincap.errors import MincapError
from mincap.evaluation import holdout

# --- the transforms, on small arrays -------------------------------------------------------


def test_random_labels_uniform_seeded_nested():
    a = variants.random_labels(4096)
    assert a.dtype == np.int64 and set(np.unique(a).tolist()) == set(range(10))
    assert np.array_equal(a, variants.random_labels(4096))  # the same draw on every call
    assert np.array_equal(variants.random_labels(256), a[:256])  # rungs are nested: N's labels are 2N's first
    assert not np.array_equal(variants.random_labels(256, variants.RANDOM_TEST_SEED), a[:256])
    # Uniform: chi-square with 9 degrees of freedom; 27.9 is its 0.1% tail.
    counts = np.bincount(a, minlength=10)
    assert ((counts - 409.6) ** 2 / 409.6).sum() < 27.9


def test_with_random_labels_takes_the_first_images():
    x = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1)
    xs, ys = variants.with_random_labels(x, 5, seed=3)
    assert xs.ravel().tolist() == [0, 1, 2, 3, 4] and np.array_equal(ys, variants.random_labels(5, 3))
    with pytest.raises(ValueError):
        variants.with_random_labels(x, 13, seed=3)


def test_permute_pixels_moves_every_pixel_as_the_permutation_says():
    x = np.arange(2 * 9, dtype=np.uint8).reshape(2, 1, 3, 3)
    perm = variants.pixel_permutation(9, seed=5)
    out = variants.permute_pixels(x, perm)
    assert out.shape == x.shape and out.dtype == np.uint8
    for i in range(2):
        assert out[i, 0].ravel().tolist() == x[i, 0].ravel()[perm].tolist()
        assert sorted(out[i].ravel().tolist()) == sorted(x[i].ravel().tolist())
    assert np.array_equal(perm, variants.pixel_permutation(9, seed=5))
    with pytest.raises(ValueError):
        variants.permute_pixels(x, np.array([0, 0, 1, 2, 3, 4, 5, 6, 7]))


# --- through the registry, on a small fake MNIST (no md5 check: the registry entry is replaced) --


@pytest.fixture
def fake_mnist(monkeypatch):
    """'mnist' replaced by 300 training and 280 test images of noise: what the derived sets read."""
    rng = np.random.default_rng(0)
    arrays = {True: (rng.integers(0, 256, (300, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, 300)),
              False: (rng.integers(0, 256, (280, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, 280))}
    monkeypatch.setitem(data.DATASETS, "mnist", data.DatasetInfo("mnist", 10, lambda roots, train: arrays[train]))
    data.registry._load_arrays.cache_clear()
    yield arrays
    data.registry._load_arrays.cache_clear()


def test_memorization_set_validation_is_its_training_set(fake_mnist):
    s = data.load("mnist-random-256", n_val=256)
    x, _ = fake_mnist[True]
    assert s.memorization and len(s.train) == len(s.val) == 256
    assert np.array_equal(s.train.x.numpy(), x[:256]) and np.array_equal(s.val.x.numpy(), x[:256])
    assert np.array_equal(s.val.y.numpy(), variants.random_labels(256))
    assert np.array_equal(s.train.y.numpy(), s.val.y.numpy())
    moved = s.to("cpu")
    assert moved.memorization and moved.val is moved.train
    test = holdout.load_test("mnist-random-256")
    assert np.array_equal(test.x.numpy(), fake_mnist[False][0][:256])
    assert np.array_equal(test.y.numpy(), variants.random_labels(256, variants.RANDOM_TEST_SEED))
    assert not data.load("mnist", n_val=50).memorization


@pytest.mark.parametrize("kw", [{}, {"n_val": 200}, {"n_val": 256, "limit": 100}])
def test_memorization_set_cannot_hold_images_out(fake_mnist, kw):
    with pytest.raises(MincapError, match="memorization set: validation is the training set itself"):
        data.load("mnist-random-256", **kw)


def test_too_few_images_is_one_line(fake_mnist):
    with pytest.raises(MincapError, match="has 300 images, fewer than 512"):
        data.load("mnist-random-512", n_val=512)


def test_study_file_on_a_memorization_set_needs_n_val_n():
    raw = {"study": {"name": "m", "dataset": "mnist-random-1024", "target": 0.9}}
    with pytest.raises(MincapError, match="data.n_val: .*set n_val = 1024"):
        parse_study(raw)
    cfg = parse_study({**raw, "data": {"n_val": 1024}})
    assert cfg.data.n_val == 1024
    with pytest.raises(MincapError, match="limit of 10"):
        parse_study({**raw, "data": {"n_val": 1024, "limit": 10}})


def test_permuted_is_mnist_with_its_pixels_moved(fake_mnist, part):
    for train in (True, False):
        x, y = fake_mnist[train]
        px, py = part("mnist-permuted", None, train)
        perm = variants.pixel_permutation(784)
        assert np.array_equal(py, y) and np.array_equal(px.reshape(len(x), 784), x.reshape(len(x), 784)[:, perm])
    a, b = data.load("mnist", n_val=50), data.load("mnist-permuted", n_val=50)
    assert np.array_equal(a.val.y.numpy(), b.val.y.numpy())  # the same split: the same images
    assert np.array_equal(b.val.x.numpy().reshape(50, 784), a.val.x.numpy().reshape(50, 784)[:, perm])


def test_registered():
    for n in variants.RANDOM_SIZES:
        info = data.DATASETS[f"mnist-random-{n}"]
        assert info.memorize == n and info.n_classes == 10
    assert data.DATASETS["mnist-permuted"].memorize == 0


# --- real MNIST ----------------------------------------------------------------------------


def test_random_labels_on_real_mnist(mnist_root):
    mx, my = data.load_arrays("mnist", mnist_root, True)
    s = data.load("mnist-random-4096", root=mnist_root, n_val=4096)
    assert np.array_equal(s.train.x.numpy(), mx[:4096])
    agree = float((s.train.y.numpy() == my[:4096]).mean())
    assert 0.08 < agree < 0.12  # independent of the true labels: chance agreement
    small = data.load("mnist-random-256", root=mnist_root, n_val=256)
    assert np.array_equal(small.train.y.numpy(), s.train.y.numpy()[:256])


def test_permuted_on_real_mnist_destroys_locality(mnist_root):
    mx, _ = holdout.test_arrays("mnist", mnist_root)
    px, _ = holdout.test_arrays("mnist-permuted", mnist_root)
    assert px.shape == mx.shape and np.array_equal(np.sort(px, axis=None), np.sort(mx, axis=None))

    def neighbour_corr(x):  # correlation of horizontally adjacent pixels: high in real images
        f = x[:2000, 0].astype(float)
        return float(np.corrcoef(f[:, :, :-1].ravel(), f[:, :, 1:].ravel())[0, 1])

    assert neighbour_corr(mx) > 0.7 and abs(neighbour_corr(px)) < 0.3


def test_train_says_memorization(mnist_root, capsys):
    rc = main(["train", "--dataset", "mnist-random-256", "--n-val", "256", "--arch", "mlp-32", "--epochs", "1",
               "--json", "--data-dir", str(mnist_root)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n_train"] == out["n_val"] == 256 and "memorization set" in out["memorization"]
    rc = main(["train", "--dataset", "mnist-random-256", "--arch", "mlp-32", "--epochs", "1",
               "--data-dir", str(mnist_root)])
    err = capsys.readouterr().err
    assert rc == 2 and "set n_val = 256" in err and len(err.strip().splitlines()) == 1
