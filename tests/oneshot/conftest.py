"""Fixtures of the one-shot tests: tiny synthetic splits and a tiny supernet space."""

from __future__ import annotations

import pytest
from oneshot_data import TINY, synthetic_splits

from mincap.data import Splits
from mincap.oneshot.space import SupernetSpace


@pytest.fixture
def splits() -> Splits:
    return synthetic_splits()


@pytest.fixture
def tiny_space() -> SupernetSpace:
    return TINY
