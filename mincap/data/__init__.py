"""Datasets as single uint8 tensors, with a seeded train/validation split and a fenced-off test set.

- `registry`: the registry, the data directory and `load` (train + validation); the test part
  is read only through `mincap.evaluation.holdout`;
- `mnist`: MNIST, Fashion-MNIST, KMNIST in torchvision's layout (md5-checked, read from .gz);
- `variants`: the offline dataset ladder derived from MNIST and scikit-learn's digits, and the
  random-label (memorization) and pixel-permuted sets of issue 17.

Importing this package registers every dataset.
"""

from mincap.data import mnist, variants  # noqa: F401  (registration on import)
from mincap.data.registry import (
    DATASETS,
    DEFAULT_N_VAL,
    DEFAULT_SPLIT_SEED,
    DatasetInfo,
    Roots,
    Split,
    Splits,
    check_split,
    data_dir,
    data_dirs,
    load,
    load_arrays,
    memorization_note,
    register,
    split_indices,
)

__all__ = ["DATASETS", "DEFAULT_N_VAL", "DEFAULT_SPLIT_SEED", "DatasetInfo", "Split", "Roots", "Splits", "check_split",
           "data_dir", "data_dirs", "load", "load_arrays", "memorization_note", "register",
           "split_indices"]
