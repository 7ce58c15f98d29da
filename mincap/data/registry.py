"""The dataset registry and the splits every command sees: train and validation, never test.

An image dataset is loaded once per process into one uint8 tensor of shape
(N, 1, H, W) and one int64 label tensor; training indexes into them directly
(no per-sample transforms, no DataLoader). The official training images are
split, deterministically from a seed, into *train* and *validation*; search and
model selection see only those two (`load`). The official test images are read only
through `mincap.evaluation.holdout`, the one door to the test set: `load_arrays(..., train=False)`
refuses unless that module has opened it (`test_door`).

A *memorization set* (`DatasetInfo.memorize` = its size N, e.g. `mnist-random-N`) has
nothing to generalize: its validation split is its training part itself, and `load`
refuses any `n_val` but N and any `limit` below N (`check_split`), so that no study or
command silently holds images out of it or trains on fewer than it scores. Its `Splits`
say so (`memorization`), and the commands print it.

Data directory: `--data-dir`, else `$MINCAP_DATA`, else `$XDG_CACHE_HOME/mincap`
(`~/.cache/mincap`). Loaders register themselves here (`register`): `mincap.data.mnist`
for the torchvision MNIST family, `mincap.data.variants` for the dataset ladder.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mincap.config import DEFAULT_N_VAL, DEFAULT_SPLIT_SEED
from mincap.errors import HoldoutClosed, MincapError

__all__ = [
    "DATASETS",
    "DEFAULT_N_VAL",
    "DEFAULT_SPLIT_SEED",
    "DatasetInfo",
    "Split",
    "Splits",
    "Roots",
    "check_split",
    "data_dir",
    "data_dirs",
    "load",
    "load_arrays",
    "test_door",
    "memorization_note",
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
    memorization: bool = False  # validation is the training part itself (a memorization set)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> Splits:
        train = self.train.to(device)
        val = train if self.memorization else self.val.to(device)  # one copy, not two
        return Splits(self.name, train, val, self.n_classes, self.memorization)


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry. `load_arrays(roots, train)` returns (images uint8 NCHW, labels int64),
    reading from the first folder of the search path `roots` that holds the dataset."""

    name: str
    n_classes: int
    load_arrays: Callable[[Roots, bool], tuple[np.ndarray, np.ndarray]]
    memorize: int = 0  # a memorization set's size N (validation = its N training images); 0: split as usual


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


# How many `test_door()` blocks are open: >0 only while mincap.evaluation.holdout reads the test part.
_test_door_depth = 0


@contextlib.contextmanager
def test_door():
    """Open the test part for one read. Only `mincap.evaluation.holdout` calls this (a layout test
    checks it), so every read of the test set passes through that module and its seal."""
    global _test_door_depth
    _test_door_depth += 1
    try:
        yield
    finally:
        _test_door_depth -= 1


def load_arrays(name: str, root: str | os.PathLike | Roots | None, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Raw arrays of a dataset part, found on the search path `data_dirs(root)`, cached per process.

    The test part (`train=False`) is refused outside `test_door()`: read it with
    `mincap.evaluation.holdout.test_arrays` (or `load_test`)."""
    if not train and not _test_door_depth:
        raise HoldoutClosed(f"the test part of {name!r} is read only through mincap.evaluation.holdout")
    return _load_arrays(name, data_dirs(root), train)


@functools.lru_cache(maxsize=8)
def _load_arrays(name: str, roots: Roots, train: bool) -> tuple[np.ndarray, np.ndarray]:
    return _info(name).load_arrays(roots, train)


def split_indices(n: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < n_val < n:
        raise MincapError(f"validation size {n_val} must be between 1 and {n - 1}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def memorization_note(name: str) -> str | None:
    """One line saying that `name` is a memorization set (validation = training), or None."""
    n = DATASETS[name].memorize if name in DATASETS else 0
    if not n:
        return None
    return (f"{name} is a memorization set: validation is the training set itself (the same {n:,} images, "
            f"random labels), so validation accuracy measures memorizing, not generalizing; its test part is "
            f"{n:,} other images with other random labels (chance, {1 / DATASETS[name].n_classes:.0%}, is all a "
            f"network can score there)")


def check_split(name: str, n_val: int, limit: int | None = None) -> None:
    """Refuse a split of a memorization set that would hold images out or train on fewer than it scores.

    Ordinary datasets pass (their split is checked when loaded). Called by `load` and when a
    study file is read, so a wrong study file creates no database."""
    n = DATASETS[name].memorize if name in DATASETS else 0
    if not n:
        return
    why = f"{name} is a memorization set: validation is the training set itself, all {n} images"
    if n_val != n:
        raise MincapError(f"{why}; set n_val = {n} ([data] n_val in a study file, --n-val on the command "
                          f"line), got {n_val}")
    if limit and limit < n:
        raise MincapError(f"{why}; a limit of {limit} would train on fewer images than it is scored on")


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
    check_split(name, n_val, limit)
    x, y = load_arrays(name, root, True)
    info = _info(name)
    if info.memorize:
        if len(y) != info.memorize:  # a loader bug, not user input
            raise MincapError(f"{name}: {len(y)} images loaded, {info.memorize} expected")
        part = Split(torch.from_numpy(x).contiguous(), torch.from_numpy(y).contiguous())
        return Splits(name, part, part, info.n_classes, memorization=True).to(device)
    train_idx, val_idx = split_indices(len(y), n_val, split_seed)
    if limit is not None:
        train_idx = train_idx[:limit]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    tr = Split(xt[train_idx].contiguous(), yt[train_idx].contiguous())
    va = Split(xt[val_idx].contiguous(), yt[val_idx].contiguous())
    return Splits(name, tr, va, _info(name).n_classes).to(device)
