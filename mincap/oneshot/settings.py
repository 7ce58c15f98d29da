"""How one-shot trials are sampled, scored and promoted: `OneshotSettings`, in a module of its own.

`mincap.oneshot.trial` imports the search's objective helpers, which import the study-file
parser; the study file's `[oneshot]` table (`mincap.config.oneshot`) builds these settings and
takes its defaults from them, so they live where the parser can import them without a circle.
`mincap.oneshot.trial.OneshotObjective` reads them by attribute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mincap.oneshot.extract import CALIB_IMAGES
from mincap.oneshot.score import SIDE_BITS

__all__ = ["OneshotSettings"]


@dataclass(frozen=True)
class OneshotSettings:
    """How one-shot trials are sampled, scored and promoted."""

    target: float = 0.99
    side_bits: int = SIDE_BITS
    calib_images: int = CALIB_IMAGES
    calib_seed: int = 0  # the same calibration images for every trial: scores compare
    # Magnitude sparsity at extraction: the file codes zeros cheaply; no training adapts to it.
    sparsities: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    promote: bool = True
    # Within 3 points of the target: inherited weights score 3.08 +- 0.24 points below the same
    # networks trained from scratch (bench/results/oneshot_ranking.json), so a trial this close
    # may reach the target once fine-tuned; a margin of 0.5 points promoted nothing in 300 trials.
    promote_margin: float = 0.03
    # ... and only a trial on the front of inherited scores: no earlier trial's inherited file is
    # as small and as accurate (a repeated draw is not fine-tuned twice).
    promote_front: bool = True
    # ... and only once the study holds this many completed trials: the front of inherited scores
    # says little after a handful of draws, and where most trials lie within the margin (a narrow
    # space, inherited weights within a point of scratch) the first trials would each be
    # fine-tuned, minutes apiece, before the cheap scores had mapped the space. 0: from the first.
    promote_after: int = 0
    # Two epochs closed about half the gap (3.08 -> 1.73 points, the same bench); a promoted trial
    # is one of few, so it gets enough epochs to close the rest.
    finetune_epochs: int = 10
    finetune_lr: float = 0.005  # half the supernet's peak, as the project's fine-tuning steps
    finetune_batch_size: int = 256
    finetune_distill_weight: float = 0.5
    finetune_temperature: float = 4.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)
