"""MNIST-like datasets in torchvision's layout: MNIST, Fashion-MNIST, KMNIST.

Files live in `<data-dir>/<Class>/raw/`, e.g. `<data-dir>/MNIST/raw/train-images-idx3-ubyte.gz`.
When they are there they are md5-checked and read directly from the `.gz` files (the
directory may be read-only, nothing is extracted), and the network is never touched.
When they are missing, torchvision's downloader is tried once; offline, that fails and
the user gets one line naming the files and the folder to put them in.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torchvision.datasets as tvd

from mincap.data.registry import DatasetInfo, Roots, register
from mincap.errors import MincapError

__all__ = ["read_idx_gz"]


def read_idx_gz(path: Path) -> np.ndarray:
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


def _torchvision_idx_loader(class_name: str) -> Callable[[Roots, bool], tuple[np.ndarray, np.ndarray]]:
    """A loader for a torchvision MNIST-family class (MNIST, FashionMNIST, KMNIST).

    The file names and md5 sums come from torchvision's own class, so the check is
    the one torchvision would do; only the download goes through torchvision.
    """

    def load_arrays(roots: Roots, train: bool) -> tuple[np.ndarray, np.ndarray]:
        cls = getattr(tvd, class_name)
        prefix = "train" if train else "t10k"
        files = {name: md5 for name, md5 in cls.resources if name.startswith(prefix)}
        found = [r / class_name / "raw" for r in roots if all((r / class_name / "raw" / n).is_file() for n in files)]
        if found:
            raw = found[0]
        else:
            raw = _download(cls, roots, class_name, [name for name, _ in cls.resources])
        for name, md5 in files.items():
            if _md5(raw / name) != md5:
                raise MincapError(
                    f"{raw / name}: md5 mismatch (corrupted or not the original file); "
                    f"delete it and put the original there"
                )
        images = next(n for n in files if "images" in n)
        labels = next(n for n in files if "labels" in n)
        x = read_idx_gz(raw / images)[:, None, :, :]
        y = read_idx_gz(raw / labels).astype(np.int64)
        if x.shape[0] != y.shape[0]:
            raise MincapError(f"{raw}: {x.shape[0]} images but {y.shape[0]} labels")
        return x, y

    return load_arrays


def _reason(err: BaseException) -> str:
    """One short reason: torchvision's message is "Error downloading X:" followed by one
    "Tried <mirror>, got:" / "<error>" pair per mirror; the last error says why."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    errors = [ln for ln in lines[1:] if not ln.startswith("Tried ")]
    return (errors[-1] if errors else lines[0].rstrip(":") if lines else type(err).__name__)[:200]


def _download(cls, roots: Roots, class_name: str, names: list[str]) -> Path:
    """Try torchvision's download once into the first folder of the search path.

    Offline, its failure becomes one actionable line naming all the files and the folder,
    and the folders the attempt created are removed again.
    """
    root = roots[0]
    raw = root / class_name / "raw"
    made = [d for d in (raw, *raw.parents) if not d.exists()]  # innermost first
    old_timeout = socket.getdefaulttimeout()
    # torchvision tries several mirrors; without a timeout an offline machine can hang.
    socket.setdefaulttimeout(10)
    try:
        if os.environ.get("MINCAP_OFFLINE"):
            raise OSError("MINCAP_OFFLINE is set")
        # torchvision prints its progress and each mirror's failure to stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            cls(root=str(root), train=True, download=True)
        return raw
    except Exception as err:  # noqa: BLE001 - any download failure means the same thing to the user
        for d in made:  # only folders this attempt created, and only if left empty
            _remove_empty(d)
        searched = ", ".join(str(r) for r in roots)
        raise MincapError(
            f"{class_name} files not found (searched {searched}) and the download failed ({_reason(err)}): "
            f"put {', '.join(names)} in {raw}/, or point --data-dir / MINCAP_DATA at a folder holding "
            f"{class_name}/raw/"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def _remove_empty(d: Path) -> None:
    if d.is_dir():
        for child in list(d.iterdir()):  # partial downloads torchvision left behind
            if child.is_file() and child.suffix in (".gz", ".part", ".tmp"):
                child.unlink()
        try:
            d.rmdir()
        except OSError:
            pass  # not empty: something else lives there


register(DatasetInfo("mnist", 10, _torchvision_idx_loader("MNIST")))
register(DatasetInfo("fashion-mnist", 10, _torchvision_idx_loader("FashionMNIST")))
register(DatasetInfo("kmnist", 10, _torchvision_idx_loader("KMNIST")))
