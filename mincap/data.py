"""Datasets as single uint8 tensors, with a seeded train/validation split and a fenced-off test set.

An image dataset is loaded once per process into one uint8 tensor of shape
(N, 1, H, W) and one int64 label tensor; training indexes into them directly
(no per-sample transforms, no DataLoader). The official training images are
split, deterministically from a seed, into *train* and *validation*; search and
model selection see only those two (`load`). The official test images are
reachable only through `load_test`, which the final evaluation alone calls
(`mincap.train.final_test_accuracy`).

Data directory: `--data-dir`, else `$MINCAP_DATA`, else `$XDG_CACHE_HOME/mincap`
(`~/.cache/mincap`). MNIST-like sets use torchvision's layout, e.g.
`<data-dir>/MNIST/raw/train-images-idx3-ubyte.gz`. When the files are there
they are md5-checked and read directly from the `.gz` files (the directory may be
read-only, nothing is extracted), and the network is never touched. When they
are missing, torchvision's downloader is tried once; offline, that fails and
the user gets one line naming the files and the folder to put them in.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mincap.errors import MincapError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "Split",
    "Splits",
    "data_dir",
    "load",
    "load_arrays",
    "load_test",
    "register",
]

DEFAULT_N_VAL = 5000
DEFAULT_SPLIT_SEED = 0


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
    """A registry entry. `load_arrays(root, train)` returns (images uint8 NCHW, labels int64)."""

    name: str
    n_classes: int
    load_arrays: Callable[[Path, bool], tuple[np.ndarray, np.ndarray]]
    description: str = ""


DATASETS: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to the registry (later issues add derived variants this way)."""
    DATASETS[info.name] = info
    return info


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """The data directory: explicit argument, else $MINCAP_DATA, else the per-user cache."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("MINCAP_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mincap"


# --- MNIST-like datasets in torchvision's layout -------------------------------------------


def _read_idx_gz(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format) straight from its .gz, without extracting it."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise MincapError(f"{path}: not an IDX file of unsigned bytes; replace it with the original")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise MincapError(f"{path}: truncated ({body.size} bytes of {int(np.prod(dims))}); replace it")
    return body.reshape(tuple(int(d) for d in dims)).copy()  # writable, detached from `raw`


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _torchvision_idx_loader(class_name: str) -> Callable[[Path, bool], tuple[np.ndarray, np.ndarray]]:
    """A loader for a torchvision MNIST-family class (MNIST, FashionMNIST, KMNIST).

    The file names and md5 sums come from torchvision's own class, so the check is
    the one torchvision would do; only the download goes through torchvision.
    """

    def load_arrays(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
        import torchvision.datasets as tvd

        cls = getattr(tvd, class_name)
        raw = root / class_name / "raw"
        prefix = "train" if train else "t10k"
        files = {name: md5 for name, md5 in cls.resources if name.startswith(prefix)}
        missing = [n for n in files if not (raw / n).is_file()]
        if missing:
            _download(cls, root, class_name, raw, sorted(files))
        for name, md5 in files.items():
            if _md5(raw / name) != md5:
                raise MincapError(
                    f"{raw / name}: md5 mismatch (corrupted or not the original file); "
                    f"delete it and put the original there"
                )
        images = next(n for n in files if "images" in n)
        labels = next(n for n in files if "labels" in n)
        x = _read_idx_gz(raw / images)[:, None, :, :]
        y = _read_idx_gz(raw / labels).astype(np.int64)
        if x.shape[0] != y.shape[0]:
            raise MincapError(f"{raw}: {x.shape[0]} images but {y.shape[0]} labels")
        return x, y

    return load_arrays


def _download(cls, root: Path, class_name: str, raw: Path, names: list[str]) -> None:
    """Try torchvision's download once; offline, turn its failure into one actionable line."""
    import socket

    old_timeout = socket.getdefaulttimeout()
    # torchvision tries several mirrors; without a timeout an offline machine can hang.
    socket.setdefaulttimeout(10)
    try:
        if os.environ.get("MINCAP_OFFLINE"):
            raise OSError("MINCAP_OFFLINE is set")
        cls(root=str(root), train=True, download=True)
    except Exception as err:  # noqa: BLE001 - any download failure means the same thing to the user
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MincapError(
            f"{class_name} files not found and download failed ({reason}): put "
            f"{', '.join(names)} in {raw}/ (or point --data-dir / MINCAP_DATA at a folder holding "
            f"{class_name}/raw/)"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


register(DatasetInfo("mnist", 10, _torchvision_idx_loader("MNIST"), "MNIST handwritten digits, 28x28"))
register(
    DatasetInfo("fashion-mnist", 10, _torchvision_idx_loader("FashionMNIST"), "Zalando clothing, 28x28")
)
register(DatasetInfo("kmnist", 10, _torchvision_idx_loader("KMNIST"), "Kuzushiji-MNIST, 28x28"))


# --- public loading API -------------------------------------------------------------------


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise MincapError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


@functools.lru_cache(maxsize=8)
def load_arrays(name: str, root: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Raw arrays of a dataset part, cached per process (the files are read once)."""
    return _info(name).load_arrays(Path(root), train)


def _split_indices(n: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < n_val < n:
        raise MincapError(f"validation size {n_val} must be between 1 and {n - 1}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load(
    name: str = "mnist",
    *,
    root: str | os.PathLike | None = None,
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
    import torch

    x, y = load_arrays(name, str(data_dir(root)), True)
    train_idx, val_idx = _split_indices(len(y), n_val, split_seed)
    if limit is not None:
        train_idx = train_idx[:limit]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    tr = Split(xt[train_idx].contiguous(), yt[train_idx].contiguous())
    va = Split(xt[val_idx].contiguous(), yt[val_idx].contiguous())
    return Splits(name, tr, va, _info(name).n_classes).to(device)


def load_test(
    name: str = "mnist",
    *,
    root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> Split:
    """The official test set. Only final evaluation calls this; nothing selects on it."""
    import torch

    x, y = load_arrays(name, str(data_dir(root)), False)
    return Split(torch.from_numpy(x).contiguous(), torch.from_numpy(y).contiguous()).to(device)


import mincap.variants  # noqa: E402,F401  (registers the dataset ladder: mnist-binary, mnist-14, ...)
