"""Shared fixtures. Real MNIST comes from ../shared/datasets (CI puts it beside the clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


def _mnist_root() -> Path | None:
    for cand in (os.environ.get("MINCAP_DATA"), SHARED):
        if cand and (Path(cand) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """Folder holding MNIST/raw/*.gz; the tests of real data fail loudly without it."""
    root = _mnist_root()
    assert root is not None, f"real MNIST not found: put it in {SHARED}/MNIST/raw or set MINCAP_DATA"
    return root


@pytest.fixture(scope="session")
def mnist_small(mnist_root):
    """2,000 train images and the usual 5,000 validation images of real MNIST (CPU)."""
    from mincap import data

    return data.load("mnist", root=mnist_root, limit=2000)


@pytest.fixture(autouse=True)
def _threads():
    from mincap.training.engine import setup_threads

    setup_threads(int(os.environ.get("MINCAP_TEST_THREADS", "2")))


@pytest.fixture
def part():
    """`part(name, root, train)`: a dataset part's raw arrays, the test part through the holdout door."""
    from mincap import data
    from mincap.evaluation import holdout

    return lambda name, root, train: data.load_arrays(name, root, True) if train else holdout.test_arrays(name, root)


@pytest.fixture
def test_reads(monkeypatch):
    """Every read of a dataset part below the registry's cache, by (name, train)."""
    seen = []
    from mincap.data import registry

    real = registry._load_arrays

    def spy(name, roots, train):
        seen.append((name, train))
        return real.__wrapped__(name, roots, train)

    monkeypatch.setattr(registry, "_load_arrays", spy)
    return seen
