"""The one selection rule: the smallest file that reaches the target on validation.

Every choice mincap makes -- a compression path's step, a search's chosen trial, the smallest
network of a depth in a report -- is this rule over different items: among those whose
*validation* accuracy reaches the target, the one with the fewest artifact bits; ties go to the
higher validation accuracy, then to the earlier item. Test accuracy never enters it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ["most_accurate", "smallest_reaching"]

T = TypeVar("T")


def smallest_reaching(items: Iterable[T], target: float, *, bits: Callable[[T], float | None],
                      val_acc: Callable[[T], float | None], order: Callable[[T], int]) -> T | None:
    """The item with the fewest bits whose validation accuracy is >= `target` (None: none is)."""
    ok = [x for x in items if val_acc(x) is not None and bits(x) is not None and val_acc(x) >= target]
    return min(ok, key=lambda x: (bits(x), -val_acc(x), order(x))) if ok else None


def most_accurate(items: Iterable[T], *, bits: Callable[[T], float], val_acc: Callable[[T], float]) -> T:
    """When nothing reaches the target: the most accurate item on validation, the smaller on a tie."""
    return max(items, key=lambda x: (val_acc(x), -bits(x)))
