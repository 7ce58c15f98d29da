"""mincap: the smallest network, counted in bits of a real file, that reaches a target accuracy.

The package root imports nothing heavy, so `mincap --help` stays instant; the public API
is re-exported lazily from its modules on first attribute access.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Not `train` itself: once the submodule `mincap.train` is imported, Python binds that
# name on the package, so `mincap.train` would be the module or the function depending
# on import order. Call `mincap.train.train`.
_EXPORTS = {
    "MincapError": "mincap.errors",
    "NonFiniteLoss": "mincap.errors",
    "Spec": "mincap.models",
    "Conv": "mincap.models",
    "PRESETS": "mincap.models",
    "build": "mincap.models",
    "count_params": "mincap.models",
    "TrainConfig": "mincap.train",
    "evaluate": "mincap.train",
    "init_model": "mincap.train",
    "final_test_accuracy": "mincap.train",
    "load": "mincap.data",
    "load_test": "mincap.data",
    "CompressConfig": "mincap.compress",
    "train_compressed": "mincap.compress",
    "train_many": "mincap.batched",
    "StudyConfig": "mincap.study",
    "SearchOptions": "mincap.search.run",
    "run_search": "mincap.search.run",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mincap' has no attribute {name!r}")
