"""The dataset registry and the splits every command sees: train and validation, never test.

An image dataset is loaded once per process into one uint8 tensor of shape
(N, 1, H, W) and one int64 label tensor; training indexes into them directly
(no per-sample transforms, no DataLoader). The official training images are
split, deterministically from a seed, into *train* and *validation*; search and
model selection see only those two (`load`). The official test images are
reachable only through `load_test`, which the final evaluation alone calls
(`mincap.train.final_test_accuracy`).

Data directory: `--data-dir`, else `$MINCAP_DATA`, else `$XDG_CACHE_HOME/mincap`
(`~/.cache/mincap`). Loaders register themselves here (`register`): `mincap.data.mnist`
for the torchvision MNIST family, `mincap.data.variants` for the dataset ladder.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mincap.config import DEFAULT_N_VAL, DEFAULT_SPLIT_SEED
from mincap.errors import MincapError

__all__ = [
    "DATASETS",
    "DEFAULT_N_VAL",
    "DEFAULT_SPLIT_SEED",
    "DatasetInfo",
    "Split",
    "Splits",
    "Roots",
    "data_dir",
    "data_dirs",
    "load",
    "load_arrays",
    "load_test",
    "register",
    "split_indices",
]



@dataclass(frozen=True)
class Split:
    """One part of a dataset: `x` uint8 (N, C, H, W), `y` int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: str | torch.device) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Splits:
    """What search and training may see: train and validation, never test."""

    name: str
    train: Split
    val: Split
    n_classes: int

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> Splits:
        return Splits(self.name, self.train.to(device), self.val.to(device), self.n_classes)


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry. `load_arrays(roots, train)` returns (images uint8 NCHW, labels int64),
    reading from the first folder of the search path `roots` that holds the dataset."""

    name: str
    n_classes: int
    load_arrays: Callable[[Roots, bool], tuple[np.ndarray, np.ndarray]]


DATASETS: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to the registry (`mincap.data.mnist`, `mincap.data.variants` do on import)."""
    DATASETS[info.name] = info
    return info


Roots = tuple[Path, ...]

# The project's machines keep the original MNIST files in a `shared/datasets` folder beside
# the source checkout; searching there by default lets a fresh clone run offline with no
# extra step. Outside such a checkout the folder does not exist and is skipped.
SHARED_BESIDE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mincap"


def data_dirs(override: str | os.PathLike | Roots | None = None) -> Roots:
    """The data search path, first entry first.

    An explicit argument or `$MINCAP_DATA` (one folder, or several joined by `os.pathsep`)
    replaces the default, which is the per-user cache (`$XDG_CACHE_HOME/mincap`, where
    downloads go) and then `shared/datasets` beside the source checkout.
    """
    if isinstance(override, tuple):
        return override
    text = os.fspath(override) if override else os.environ.get("MINCAP_DATA", "")
    if text:
        return tuple(Path(p).expanduser() for p in str(text).split(os.pathsep) if p)
    return (_cache_dir(), SHARED_BESIDE_CHECKOUT)


def data_dir(override: str | os.PathLike | Roots | None = None) -> Path:
    """The first folder of the search path: where downloads and writable caches go."""
    return data_dirs(override)[0]


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise MincapError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def load_arrays(name: str, root: str | os.PathLike | Roots | None, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Raw arrays of a dataset part, found on the search path `data_dirs(root)`, cached per process."""
    return _load_arrays(name, data_dirs(root), train)


@functools.lru_cache(maxsize=8)
def _load_arrays(name: str, roots: Roots, train: bool) -> tuple[np.ndarray, np.ndarray]:
    return _info(name).load_arrays(roots, train)


def split_indices(n: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < n_val < n:
        raise MincapError(f"validation size {n_val} must be between 1 and {n - 1}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load(
    name: str = "mnist",
    *,
    root: str | os.PathLike | Roots | None = None,
    n_val: int = DEFAULT_N_VAL,
    split_seed: int = DEFAULT_SPLIT_SEED,
    limit: int | None = None,
    device: str | torch.device = "cpu",
) -> Splits:
    """Train and validation splits of `name`'s official training set.

    The split is a seeded permutation, identical across runs and machines.
    `limit` keeps the first `limit` training images of the train split (for quick
    runs); validation is never shrunk, so accuracies stay comparable.
    """
    x, y = load_arrays(name, root, True)
    train_idx, val_idx = split_indices(len(y), n_val, split_seed)
    if limit is not None:
        train_idx = train_idx[:limit]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    tr = Split(xt[train_idx].contiguous(), yt[train_idx].contiguous())
    va = Split(xt[val_idx].contiguous(), yt[val_idx].contiguous())
    return Splits(name, tr, va, _info(name).n_classes).to(device)


def load_test(
    name: str = "mnist",
    *,
    root: str | os.PathLike | Roots | None = None,
    device: str | torch.device = "cpu",
) -> Split:
    """The official test set. Only final evaluation calls this; nothing selects on it."""
    x, y = load_arrays(name, root, False)
    return Split(torch.from_numpy(x).contiguous(), torch.from_numpy(y).contiguous()).to(device)
