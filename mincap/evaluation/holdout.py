"""The only door to the test set.

Every read of a dataset's official test part goes through this module: `test_arrays` (raw
arrays), `load_test` (a `Split`) and `final_test_accuracy` (the accuracy of a network already
chosen). The data registry refuses the test part to anyone else (`mincap.data.registry.test_door`,
which only this module opens; a layout test checks that), so "nothing selects on the test set"
is a property of the code, not a convention.

`sealed()` closes the door for a block: inside it every read raises `HoldoutClosed`. The tests
run a search, replicates, an entropy estimate, a compression path and the one-shot search sealed,
so a regression that reads the test set while choosing fails there.

The commands that open the door are reports, run after the choice is made: `mincap summary`
(the chosen network, once), `mincap plot` (through `summarize`, for a chosen network whose test
accuracy is not stored yet), `mincap verify`, and `mincap train --test`.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from mincap.data import Split, registry
from mincap.errors import HoldoutClosed
from mincap.training.engine import evaluate

__all__ = ["final_test_accuracy", "is_sealed", "load_test", "sealed", "test_arrays"]

_seal_depth = 0


@contextlib.contextmanager
def sealed():
    """Within this block no code may read the test set: every read raises `HoldoutClosed`."""
    global _seal_depth
    _seal_depth += 1
    try:
        yield
    finally:
        _seal_depth -= 1


def is_sealed() -> bool:
    return _seal_depth > 0


def test_arrays(name: str = "mnist", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The test part's raw arrays (images uint8 NCHW, labels int64)."""
    if _seal_depth:
        raise HoldoutClosed(f"the test set of {name!r} was read while the holdout is sealed")
    with registry.test_door():
        return registry.load_arrays(name, root, False)


def load_test(name: str = "mnist", *, root: str | os.PathLike | None = None,
              device: str | torch.device = "cpu") -> Split:
    """The official test set as a `Split`. Reports call this; nothing selects on it."""
    x, y = test_arrays(name, root)
    return Split(torch.from_numpy(x).contiguous(), torch.from_numpy(y).contiguous()).to(device)


def final_test_accuracy(model: torch.nn.Module, dataset: str, *, root: str | None = None) -> tuple[float, torch.Tensor]:
    """Test accuracy of a finished, already chosen model: report it, never select on it."""
    return evaluate(model, load_test(dataset, root=root))
