"""`estimate(dataset, name)`: load a dataset's official training set, run one estimator, cache it.

The estimators themselves live in `simple` (asker, pixels, compressed, labels) and
`prequential` and `switching`; results are cached by `cache`, keyed by the settings, the data's bytes and,
for prequential, a hash of the training code.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mincap import data
from mincap.entropy import cache, simple
from mincap.entropy.base import (
    COMPRESSORS,
    DEFAULT_BUDGETS_S,
    DEFAULT_THRESHOLD,
    ESTIMATORS,
    Estimate,
)
from mincap.entropy.prequential import PrequentialConfig, prequential
from mincap.entropy.switching import SwitchConfig, doubling_ends, prequential_switch
from mincap.errors import MincapError

__all__ = ["estimate"]


def _settings(name: str, threshold: float, cfg: PrequentialConfig, switch_cfg: SwitchConfig) -> dict:
    if name in ("asker", "pixels"):
        return {"threshold": threshold, "binarize": "pixel > threshold", "split": "official train"}
    if name == "compressed":
        return {
            "compressors": list(COMPRESSORS),
            "lzma": "preset 9|EXTREME",
            "zstd": "level 22",
            "png": "one stacked grayscale PNG, optimize",
            "split": "official train",
        }
    if name == "labels":
        return {"split": "official train"}
    if name == "prequential-switch":
        return {**switch_cfg.to_dict(), "split": "official train", "code": _training_code_hash()}
    return {**cfg.to_dict(), "split": "official train", "code": _training_code_hash()}


def _training_code_hash() -> str:
    """Hash of the sources that determine the prequential models (training engine, models, coder).

    Part of the cache key: a change to the training code (say, its learning-rate
    schedule) changes the trained models, so an older cached result is not reused.
    """
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in (here.parent / "training" / "engine.py", here.parent / "nets" / "models.py", here / "prequential.py",
              here / "switching.py"):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _compute(name, x, y, n_classes, threshold, cfg, budget_s, progress,
             switch_cfg=None) -> tuple[float | None, float | None, dict]:
    n = len(y)
    if name == "asker":
        return simple.asker_bits(x, threshold), None, {"formula": "-sum_i p_i log2 p_i", "p_i": "P(pixel i > threshold)"}
    if name == "pixels":
        b = simple.pixels_bits(x, threshold)
        return b, b * n, {}
    if name == "labels":
        b = simple.label_bits(y, n_classes)
        return b, b * n, {"uniform_bits_per_example": math.log2(n_classes)}
    if name == "compressed":
        with _status(progress) as on_start:
            sizes = simple.compressed_sizes(x, on_start=on_start)
        best = min(sizes, key=sizes.get)
        total = 8.0 * sizes[best]
        return total / n, total, {"bytes": sizes, "best": best, "raw_bytes": int(x.size)}
    if name == "prequential-switch":
        scfg = switch_cfg or SwitchConfig()
        n_chunks = len(doubling_ends(len(y), scfg.first or n_classes, scfg.ratio))
        with _chunk_progress(progress, n_chunks, name) as on_chunk:
            r = prequential_switch(x, y, n_classes, scfg, budget_s=budget_s, on_chunk=on_chunk)
    else:
        with _chunk_progress(progress, len(cfg.fractions), name) as on_chunk:
            r = prequential(x, y, n_classes, cfg, budget_s=budget_s, on_chunk=on_chunk)
    details = {
        "kilobits": r.bits_total / 1000,
        "uniform_bits": r.uniform_bits,
        "fraction_of_uniform": r.fraction_of_uniform,
        "budget_hit": r.budget_hit,
        "chunks": r.chunks,
    }
    return r.bits_total / n, r.bits_total, details


@contextlib.contextmanager
def _status(enabled: bool):
    if not enabled:
        yield None
        return
    with Console(stderr=True).status("compressing") as st:
        yield lambda name: st.update(f"compressing the training images with {name}")


@contextlib.contextmanager
def _chunk_progress(enabled: bool, n_chunks: int, name: str = "prequential"):
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[kbits]} kbit so far"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("prequential", total=n_chunks, kbits="0.0")
        total = [0.0]

        def on_chunk(k: int, _n: int, info: dict) -> None:
            total[0] += info["bits"]
            bar.update(task, completed=k + 1, kbits=f"{total[0] / 1000:.1f}")

        yield on_chunk


def estimate(
    dataset: str,
    estimator: str,
    *,
    root: str | os.PathLike | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    prequential_cfg: PrequentialConfig | None = None,
    switch_cfg: SwitchConfig | None = None,
    budget_s: float | None = -1.0,
    use_cache: bool = True,
    progress: bool = False,
) -> Estimate:
    """Run one estimator on `dataset`'s official training set, reusing a cached result if any.

    Prequential results cut short by `budget_s` are returned but not cached. `budget_s` -1 (the
    default): the estimator's own default (`DEFAULT_BUDGETS_S`); None: no limit.
    """
    if estimator not in ESTIMATORS:
        raise MincapError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
    if dataset not in data.DATASETS:
        raise MincapError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(data.DATASETS))}")
    simple._check_threshold(threshold)
    cfg = prequential_cfg or PrequentialConfig()
    x, y = data.load_arrays(dataset, root, True)
    switch_cfg = switch_cfg or SwitchConfig()
    if budget_s is not None and budget_s == -1.0:
        budget_s = DEFAULT_BUDGETS_S.get(estimator)
    settings = _settings(estimator, threshold, cfg, switch_cfg)
    name = None
    if use_cache:
        name = cache.key(dataset, estimator, settings, cache.fingerprint(x, y))
        hit = cache.read(root, name)
        if hit is not None:
            try:
                est = Estimate.from_dict(hit)
                est.cached = True
                return est
            except (KeyError, TypeError):
                pass  # an entry from another version: recompute
    t0 = time.perf_counter()
    per, total, details = _compute(
        estimator, x, y, data.DATASETS[dataset].n_classes, threshold, cfg, budget_s, progress, switch_cfg
    )
    est = Estimate(dataset, estimator, per, total, int(len(y)), settings, details, time.perf_counter() - t0)
    if name is not None and not details.get("budget_hit"):
        cache.write(root, name, est.to_dict())
    return est
