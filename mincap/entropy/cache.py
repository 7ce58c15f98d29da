"""Small JSON cache for estimator results, beside the data or in the user's cache.

Results live in `<data-dir>/mincap-cache/entropy/` when that folder can be
written (one without write mode bits counts as read-only, even for root), else in `$XDG_CACHE_HOME/mincap/mincap-cache/entropy/`
(`~/.cache/mincap/...`): the data folder may be read-only (it is in CI). Reads
look in both, data folder first. A key is the dataset name, the estimator, and a
hash of its settings and of the data's bytes, so changed data never hits a
stale entry. Unreadable entries are ignored; unwritable folders skip caching.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from mincap.data import data_dir

__all__ = ["cache_dirs", "fingerprint", "key", "newest", "read", "write"]


def cache_dirs(root: str | os.PathLike | None) -> list[Path]:
    """Candidate folders, preferred first: beside the data, then the per-user cache."""
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mincap"
    dirs = [data_dir(root) / "mincap-cache" / "entropy", user / "mincap-cache" / "entropy"]
    return list(dict.fromkeys(dirs))


def fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of the arrays' shapes, dtypes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def key(dataset: str, estimator: str, settings: dict, data_fp: str) -> str:
    blob = json.dumps({"settings": settings, "data": data_fp}, sort_keys=True).encode()
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)
    return f"{safe}-{estimator}-{hashlib.sha256(blob).hexdigest()[:16]}.json"


def newest(dataset: str, root=None) -> dict[str, dict]:
    """The newest cached result of each estimator for `dataset`, whatever its settings (none computed).

    {estimator: {"bits_per_example": ..., "bits_total": ...}}, estimators sorted by name. For
    reports that show what has been estimated; `read` is the exact lookup by key.
    """
    found: dict[str, tuple[float, dict]] = {}
    for d in cache_dirs(root):
        for f in Path(d).glob(f"{dataset}-*.json"):
            try:
                e = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if e.get("dataset") != dataset or "estimator" not in e:
                continue
            mtime = f.stat().st_mtime
            if e["estimator"] not in found or mtime > found[e["estimator"]][0]:
                found[e["estimator"]] = (mtime, {"bits_per_example": e.get("bits_per_example"),
                                                  "bits_total": e.get("bits_total")})
    return {k: v for k, (_, v) in sorted(found.items())}


def read(root, name: str) -> dict | None:
    for d in cache_dirs(root):
        try:
            return json.loads((d / name).read_text())
        except (OSError, ValueError):
            continue
    return None


def _writable(d: Path) -> bool:
    """Whether `d` can be created/written, honouring read-only mode bits even for root.

    Root bypasses permissions, but a folder marked r-x (a shared, read-only
    dataset folder) is meant to stay untouched.
    """
    p = d
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    if not p.is_dir():
        return False
    return bool(p.stat().st_mode & 0o222) and os.access(p, os.W_OK)


def write(root, name: str, payload: dict) -> Path | None:
    """Write atomically to the first writable folder; None when none is."""
    text = json.dumps(payload, sort_keys=True, indent=1)
    for d in cache_dirs(root):
        if not _writable(d):
            continue
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, d / name)
            return d / name
        except OSError:
            continue
    return None
