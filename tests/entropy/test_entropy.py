"""Entropy estimators (issue 3): synthetic data with known answers, plus the asker's 191 bits on real MNIST."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mincap import data
from mincap.cli import main
from mincap.entropy import Estimate, PrequentialConfig, estimate, simple
from mincap.entropy.prequential import BLIER_OLLIVIER_FRACTIONS, chunk_ends, prequential
from mincap.entropy.table import entropy_table
from mincap.errors import MincapError
from mincap.report import render


def _exact_bernoulli(p: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n images (n, 1, H, W): pixel i is 255 in exactly p_i * n images, placed independently per pixel."""
    rng = np.random.default_rng(seed)
    flat = np.zeros((n, p.size), dtype=np.uint8)
    for i, pi in enumerate(p.ravel()):
        flat[rng.permutation(n)[: round(pi * n)], i] = 255
    return flat.reshape(n, 1, *p.shape)


# --- pixels / asker ------------------------------------------------------------------------


def test_pixels_matches_analytic_binary_entropy():
    p = np.array([[0.0, 0.1, 0.25, 0.5], [0.75, 0.9, 1.0, 0.3]])
    x = _exact_bernoulli(p, 1000)
    analytic = sum(-q * math.log2(q) - (1 - q) * math.log2(1 - q) for q in p.ravel() if 0 < q < 1)
    assert simple.pixels_bits(x) == pytest.approx(analytic, abs=1e-6)
    # the asker's formula keeps only the "on" term, so it differs on the same data
    asker = sum(-q * math.log2(q) for q in p.ravel() if q > 0)
    assert simple.asker_bits(x) == pytest.approx(asker, abs=1e-6)
    assert abs(simple.asker_bits(x) - simple.pixels_bits(x)) > 1


def test_threshold_is_strictly_greater():
    x = np.array([0, 10, 128, 255], dtype=np.uint8).reshape(4, 1, 1, 1)
    assert simple.pixel_frequencies(x, 0)[0] == 0.75
    assert simple.pixel_frequencies(x, 127)[0] == 0.5
    assert simple.pixel_frequencies(x, 128)[0] == 0.25


@pytest.mark.parametrize("bad", [-1, 255, 300, float("nan")])
def test_bad_threshold_is_a_user_error(bad):
    x = np.zeros((2, 1, 2, 2), dtype=np.uint8)
    with pytest.raises(MincapError):
        simple.pixels_bits(x, bad)


def test_non_uint8_images_rejected():
    with pytest.raises(MincapError, match="uint8"):
        simple.asker_bits(np.zeros((2, 1, 2, 2), dtype=np.float32))


# --- labels ------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 10])
def test_labels_uniform_is_log2_k(k):
    y = np.tile(np.arange(k), 50)
    assert simple.label_bits(y, k) == pytest.approx(math.log2(k), abs=1e-12)


def test_labels_constant_is_zero_and_range_checked():
    assert simple.label_bits(np.zeros(10, dtype=np.int64), 10) == 0.0
    with pytest.raises(MincapError, match="labels"):
        simple.label_bits(np.array([0, 10]), 10)


# --- compressed --------------------------------------------------------------------------


def test_compressed_repeated_image_is_tiny():
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, 1, 28, 28), dtype=np.uint8)
    n = 2000
    x = np.repeat(one, n, axis=0)
    sizes = simple.compressed_sizes(x)
    assert set(sizes) == {"lzma", "zstd", "png"}
    raw = n * 28 * 28
    # lzma and zstd find the repetition: under 1% of N x image size
    assert sizes["lzma"] < raw / 100 and sizes["zstd"] < raw / 100
    # random bytes do not compress: the bound is not trivially small
    noise = rng.integers(0, 256, (200, 1, 28, 28), dtype=np.uint8)
    assert min(simple.compressed_sizes(noise, ("lzma", "zstd")).values()) > 0.95 * noise.size


# --- prequential -------------------------------------------------------------------------


def test_chunk_ends_follow_the_schedule():
    assert chunk_ends(60000, BLIER_OLLIVIER_FRACTIONS) == [
        60, 120, 240, 480, 960, 1920, 3750, 7500, 15000, 30000, 60000
    ]
    assert chunk_ends(100, BLIER_OLLIVIER_FRACTIONS)[0] == 1
    with pytest.raises(MincapError):
        chunk_ends(100, (0.5, 0.25, 1.0))


# no shift augmentation: the toy rule reads fixed pixel positions
_SMALL = PrequentialConfig(
    arch='{"family":"mlp","hidden":[32]}', epochs=20, min_steps=100, lr=0.05, augment_shift=0
)


@pytest.fixture
def one_thread():
    """Tiny MLPs: one torch thread. On the shared 2-core machine two threads made these
    steps ~5x slower (thread hand-offs dominate steps this small)."""
    from mincap.training.engine import setup_threads

    setup_threads(1)


def _toy(n: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)
    y = (x[:, 0, 0, 0] > 127).astype(np.int64) * 2 + (x[:, 0, 0, 1] > 127)  # 4 classes, a simple rule
    return x, y, rng


def test_prequential_learnable_labels_far_below_uniform(one_thread):
    x, y, _ = _toy()
    r = prequential(x, y, 4, _SMALL)
    assert r.uniform_bits == 2 * len(y)
    # measured 0.173 on the 2-core CPU machine (1 thread)
    assert r.fraction_of_uniform < 0.4
    assert r.chunks[0]["bits"] == 2 * r.chunks[0]["end"]  # first chunk at the uniform code
    assert sum(c["bits"] for c in r.chunks) == pytest.approx(r.bits_total)


def test_prequential_random_labels_stay_near_uniform(one_thread):
    x, _, rng = _toy()
    y = rng.integers(0, 4, len(x))
    r = prequential(x, y, 4, _SMALL)
    # measured 1.005: the per-chunk option index costs a few bits, nothing is learned
    assert 0.97 < r.fraction_of_uniform < 1.03


def test_prequential_budget_cut_is_flagged_and_still_a_code(one_thread):
    x, y, _ = _toy(400)
    r = prequential(x, y, 4, _SMALL, budget_s=1e-9)
    assert r.budget_hit
    assert r.bits_total == pytest.approx(r.uniform_bits)  # no model ever trained: all uniform
    with pytest.raises(MincapError, match="budget"):
        prequential(x, y, 4, _SMALL, budget_s=0)


# --- estimate(), cache, CLI --------------------------------------------------------------


@pytest.fixture
def toy_dataset(monkeypatch, tmp_path):
    """A registered synthetic dataset 'toy' (4 classes) and a private cache, never ~/.cache."""
    x, y, _ = _toy(600)
    info = data.DatasetInfo("toy", 4, lambda roots, train: (x, y))
    monkeypatch.setitem(data.DATASETS, "toy", info)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data.registry._load_arrays.cache_clear()  # arrays are cached per process by (name, search path)
    yield tmp_path
    data.registry._load_arrays.cache_clear()  # arrays are cached per process by (name, search path)


def test_estimate_caches_beside_data_then_reuses(toy_dataset):
    root = toy_dataset / "data"
    root.mkdir()
    a = estimate("toy", "pixels", root=root)
    assert not a.cached and a.bits_total == pytest.approx(a.bits_per_example * 600)
    files = list((root / "mincap-cache" / "entropy").glob("toy-pixels-*.json"))
    assert len(files) == 1
    b = estimate("toy", "pixels", root=root)
    assert b.cached and b.bits_per_example == a.bits_per_example
    c = estimate("toy", "pixels", root=root, threshold=127)  # other settings: another entry
    assert not c.cached and c.bits_per_example != a.bits_per_example


def test_estimate_unwritable_data_dir_falls_back_to_user_cache(toy_dataset):
    root = toy_dataset / "not-a-dir"
    root.write_text("a file, so nothing can be created under it (even as root)")
    estimate("toy", "labels", root=root)
    assert list((toy_dataset / "xdg" / "mincap" / "mincap-cache" / "entropy").glob("toy-labels-*.json"))
    assert estimate("toy", "labels", root=root).cached


def test_unknown_names_are_user_errors(toy_dataset):
    with pytest.raises(MincapError, match="estimator"):
        estimate("toy", "nope")
    with pytest.raises(MincapError, match="dataset"):
        estimate("no-such-set", "labels")


def test_cli_json_and_table(toy_dataset, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line per row in the captured table
    root = toy_dataset / "data"
    argv = ["entropy", "toy", "--data-dir", str(root), "--estimator", "asker", "--estimator", "labels"]
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["estimator"] for r in rows] == ["asker", "labels"]
    for r in rows:
        assert {"dataset", "estimator", "bits_per_example", "bits_total", "settings", "mackay_params"} <= set(r)
    asker, labels = rows
    assert asker["bits_total"] is None and asker["mackay_params"] == pytest.approx(asker["bits_per_example"] / 2)
    assert labels["bits_total"] == pytest.approx(600 * labels["bits_per_example"])
    assert labels["mackay_params"] == pytest.approx(labels["bits_total"] / 2)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "cached" in out and "MacKay" in out


def test_cli_bad_threshold_one_line_exit_2(toy_dataset, capsys):
    rc = main(["entropy", "toy", "--data-dir", str(toy_dataset), "--estimator", "pixels", "--threshold", "300"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "threshold" in err


def test_table_renders_prequential_note():
    row = Estimate(
        "mnist", "prequential", 0.2, 12000.0, 60000, {},
        {"fraction_of_uniform": 0.06, "budget_hit": True, "kilobits": 12.0},
    ).to_dict()
    text = render(entropy_table([row]), width=200)
    assert "12.00 kbit" in text and "6.0% of uniform code, budget hit" in text and "6,000" in text


# --- real MNIST: the learner's figure ----------------------------------------------------


def test_asker_reproduces_191_bits_on_mnist_and_pixels_differs(mnist_root):
    x, _ = data.load_arrays("mnist", str(mnist_root), True)
    assert len(x) == 60000  # the learner's "training set": all official training images
    asker = simple.asker_bits(x, threshold=0)
    pixels = simple.pixels_bits(x, threshold=0)
    # measured: asker 190.788, pixels 342.407 bits per image (threshold 0, i.e. any ink)
    assert abs(asker - 191) < 0.5
    assert asker == pytest.approx(190.788, abs=0.01)
    assert pixels == pytest.approx(342.407, abs=0.01)
    assert pixels - asker > 100


def test_read_only_mode_bits_are_honoured_even_for_root(toy_dataset):
    root = toy_dataset / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        estimate("toy", "asker", root=root)
        assert not (root / "mincap-cache").exists()
        assert list((toy_dataset / "xdg" / "mincap" / "mincap-cache" / "entropy").glob("toy-asker-*.json"))
    finally:
        root.chmod(0o755)
