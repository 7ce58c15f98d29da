"""How much information is in a dataset: the X axis of mincap's plot.

Every estimator works on a dataset's full official *training* set (MNIST: all
60,000 images; the test set is never read) and returns bits, per example and,
where it makes sense, for the whole set:

- `asker`: the learner's 191-bit computation, reproduced literally. Not an
  entropy of anything (see `simple.asker_bits`).
- `pixels`: Σ_i H2(p_i) over binarized pixels, an upper bound on the entropy of
  the binarized image distribution (independent-pixel model).
- `compressed`: the best of lzma / zstd / PNG on the raw 8-bit images, an upper
  bound on the information in the images as they are.
- `labels`: H(Y) from label frequencies; times N, the cost of the training
  labels sent with no model.
- `prequential`: Blier & Ollivier's online code length of the labels given the
  images, an upper bound on the information the labels add to the images.

The derived MacKay reading (`Estimate.mackay_params`) is bits / 2: the number of
weights that MacKay's ~2 bits of capacity per weight would call "needed", taken
of `bits_total` where defined, else of `bits_per_example` (the learner's usage).

`estimate(dataset, name)` loads the data, runs one estimator and caches the
result (`mincap.entropy.cache`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field

from mincap.errors import MincapError

__all__ = [
    "COMPRESSORS",
    "DEFAULT_BUDGET_S",
    "DEFAULT_THRESHOLD",
    "ESTIMATORS",
    "Estimate",
    "PrequentialConfig",
    "estimate",
]

ESTIMATORS = ("asker", "pixels", "compressed", "labels", "prequential")
DEFAULT_BUDGET_S = 300.0
# A pixel is 1 when > DEFAULT_THRESHOLD: "any ink" (the reading that gives the learner's 191).
DEFAULT_THRESHOLD = 0
COMPRESSORS = ("lzma", "zstd", "png")

from mincap.entropy.prequential import PrequentialConfig  # noqa: E402  (numpy-free import)

BOUNDS = {
    "asker": "nothing (not an entropy)",
    "pixels": ">= binarized-image entropy",
    "compressed": ">= info in the 8-bit images",
    "labels": "labels sent with no model",
    "prequential": ">= info in labels given images",
}


@dataclass
class Estimate:
    """One estimator's result on one dataset. Bits are base-2; None where undefined."""

    dataset: str
    estimator: str
    bits_per_example: float | None
    bits_total: float | None
    n_examples: int
    settings: dict
    details: dict = field(default_factory=dict)
    time_s: float = 0.0
    cached: bool = False

    @property
    def bounds(self) -> str:
        return BOUNDS[self.estimator]

    @property
    def mackay_params(self) -> float | None:
        """bits / 2 (MacKay's 2 bits per weight), of bits_total where defined."""
        bits = self.bits_total if self.bits_total is not None else self.bits_per_example
        return None if bits is None else bits / 2

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "estimator": self.estimator,
            "bits_per_example": self.bits_per_example,
            "bits_total": self.bits_total,
            "n_examples": self.n_examples,
            "bounds": self.bounds,
            "mackay_params": self.mackay_params,
            "mackay_of": "bits_total" if self.bits_total is not None else "bits_per_example",
            "settings": self.settings,
            "details": self.details,
            "time_s": round(self.time_s, 3),
            "cached": self.cached,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Estimate:
        keys = ("dataset", "estimator", "bits_per_example", "bits_total", "n_examples", "settings", "details", "time_s")
        return cls(**{k: d[k] for k in keys})


def _settings(name: str, threshold: float, cfg: PrequentialConfig) -> dict:
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
    return {**cfg.to_dict(), "split": "official train", "code": _training_code_hash()}


def _training_code_hash() -> str:
    """Hash of the sources that determine the prequential models (training engine, models, coder).

    Part of the cache key: a change to the training code (say, its learning-rate
    schedule) changes the trained models, so an older cached result is not reused.
    """
    import hashlib
    from pathlib import Path

    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in (here.parent / "train.py", here.parent / "models.py", here / "prequential.py"):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _compute(name, x, y, n_classes, threshold, cfg, budget_s, progress) -> tuple[float | None, float | None, dict]:
    from mincap.entropy import simple

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
    from mincap.entropy.prequential import prequential

    with _chunk_progress(progress, len(cfg.fractions)) as on_chunk:
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
    from rich.console import Console

    with Console(stderr=True).status("compressing") as st:
        yield lambda name: st.update(f"compressing the training images with {name}")


@contextlib.contextmanager
def _chunk_progress(enabled: bool, n_chunks: int):
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]prequential"),
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
    budget_s: float | None = DEFAULT_BUDGET_S,
    use_cache: bool = True,
    progress: bool = False,
) -> Estimate:
    """Run one estimator on `dataset`'s official training set, reusing a cached result if any.

    Prequential results cut short by `budget_s` are returned but not cached.
    """
    from mincap import data
    from mincap.entropy import cache, simple

    if estimator not in ESTIMATORS:
        raise MincapError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
    if dataset not in data.DATASETS:
        raise MincapError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(data.DATASETS))}")
    simple._check_threshold(threshold)
    cfg = prequential_cfg or PrequentialConfig()
    x, y = data.load_arrays(dataset, str(data.data_dir(root)), True)
    settings = _settings(estimator, threshold, cfg)
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
        estimator, x, y, data.DATASETS[dataset].n_classes, threshold, cfg, budget_s, progress
    )
    est = Estimate(dataset, estimator, per, total, int(len(y)), settings, details, time.perf_counter() - t0)
    if name is not None and not details.get("budget_hit"):
        cache.write(root, name, est.to_dict())
    return est
