"""mincap: the smallest network, counted in bits of a real file, that reaches a target accuracy.

The package root imports nothing heavy, so `mincap --help` stays instant; the public API
is re-exported lazily from its modules on first attribute access.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "MincapError": "mincap.errors",
    "NonFiniteLoss": "mincap.errors",
    "Spec": "mincap.nets.models",
    "Conv": "mincap.nets.models",
    "PRESETS": "mincap.nets.models",
    "build": "mincap.nets.models",
    "count_params": "mincap.nets.models",
    "TrainConfig": "mincap.config",
    "evaluate": "mincap.training.engine",
    "init_model": "mincap.training.engine",
    "final_test_accuracy": "mincap.evaluation.holdout",
    "load": "mincap.data",
    "load_test": "mincap.evaluation.holdout",
    "CompressConfig": "mincap.config",
    "train_compressed": "mincap.compression.qat",
    "train_many": "mincap.training.batched",
    "StudyConfig": "mincap.config.study",
    "SearchOptions": "mincap.search.run",
    "run_search": "mincap.search.run",
    # the file format: write a trained network, read a file back into one
    "export": "mincap.format.writer",
    "decode": "mincap.format.container",
    "verify_file": "mincap.evaluation.verify",
    "compression_path": "mincap.compression.path",
    "sealed": "mincap.evaluation.holdout",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mincap' has no attribute {name!r}")
