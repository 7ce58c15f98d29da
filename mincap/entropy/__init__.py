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
- `prequential-switch`: the same code, tighter: their chunk schedule and a switch
  distribution over a linear model and two CNNs of growing size (`switching`).

The derived MacKay reading (`Estimate.mackay_params`) is bits / 2: the number of
weights that MacKay's ~2 bits of capacity per weight would call "needed", taken
of `bits_total` where defined, else of `bits_per_example` (the learner's usage).

`estimate(dataset, name)` loads the data, runs one estimator and caches the
result (`mincap.entropy.cache`).
"""

from __future__ import annotations

import importlib

from mincap.entropy.base import (
    BOUNDS,
    COMPRESSORS,
    DEFAULT_BUDGET_S,
    DEFAULT_BUDGETS_S,
    DEFAULT_THRESHOLD,
    ESTIMATORS,
    PREQUENTIAL_ESTIMATORS,
    Estimate,
)

# The estimators need numpy and torch; the names above do not (the CLI builds its options from
# them), so the rest is imported on first use.
_LAZY = {"estimate": "mincap.entropy.estimators", "PrequentialConfig": "mincap.entropy.prequential",
         "SwitchConfig": "mincap.entropy.switching"}

__all__ = ["BOUNDS", "COMPRESSORS", "DEFAULT_BUDGETS_S", "DEFAULT_BUDGET_S", "DEFAULT_THRESHOLD", "ESTIMATORS",
           "PREQUENTIAL_ESTIMATORS", "Estimate", "PrequentialConfig", "SwitchConfig", "estimate"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mincap.entropy' has no attribute {name!r}")
