"""The estimators' names, defaults and what each bounds, and their result type (`Estimate`).

Light on purpose (no numpy, no torch): the command line builds its options from these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BOUNDS", "COMPRESSORS", "DEFAULT_BUDGETS_S", "DEFAULT_BUDGET_S", "DEFAULT_THRESHOLD", "ESTIMATORS", "Estimate",
           "PREQUENTIAL_ESTIMATORS"]

ESTIMATORS = ("asker", "pixels", "compressed", "labels", "prequential", "prequential-switch")
# The estimators that code the labels given the images (codes of the same thing, same unit).
PREQUENTIAL_ESTIMATORS = ("prequential", "prequential-switch")
DEFAULT_BUDGET_S = 300.0
# Time limits when --budget is not given: the switching code trains three models per chunk.
DEFAULT_BUDGETS_S = {"prequential": DEFAULT_BUDGET_S, "prequential-switch": 3600.0}
# A pixel is 1 when > DEFAULT_THRESHOLD: "any ink" (the reading that gives the learner's 191).
DEFAULT_THRESHOLD = 0
COMPRESSORS = ("lzma", "zstd", "png")

BOUNDS = {
    "asker": "nothing (not an entropy)",
    "pixels": ">= binarized-image entropy",
    "compressed": ">= info in the 8-bit images",
    "labels": "labels sent with no model",
    "prequential": ">= info in labels given images",
    "prequential-switch": ">= info in labels given images",
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
