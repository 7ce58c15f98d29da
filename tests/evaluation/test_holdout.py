"""The one door to the test set (`mincap.evaluation.holdout`): the registry refuses everyone else,
and a sealed door refuses even itself (the sealed search: tests/search/test_sealed_holdout.py)."""

import pytest

from mincap import data
from mincap.errors import HoldoutClosed
from mincap.evaluation import holdout


def test_the_registry_refuses_the_test_part_outside_the_door(mnist_root):
    with pytest.raises(HoldoutClosed, match="mincap.evaluation.holdout"):
        data.load_arrays("mnist", str(mnist_root), False)
    x, y = holdout.test_arrays("mnist", str(mnist_root))
    assert x.shape == (10000, 1, 28, 28) and len(y) == 10000


def test_sealed_refuses_even_the_door(mnist_root, test_reads):
    with holdout.sealed():
        assert holdout.is_sealed()
        with pytest.raises(HoldoutClosed, match="sealed"):
            holdout.load_test("mnist", root=str(mnist_root))
    assert not holdout.is_sealed() and ("mnist", False) not in test_reads
