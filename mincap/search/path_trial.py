"""A trial's training as a compression path: one training run, a size/accuracy curve, one answer.

With a sampled path (`CompressConfig.path`, drawn from `[space] paths`, e.g.
"sparsity=0.3;sparsity=0.5;bits=2"), a trial
trains once and then shrinks step by step (`mincap.compression.path.compression_path`); every step is
exported, decoded and evaluated on validation. The trial's result -- its two objective
values, its artifact -- is the smallest step that reaches the study's target; when no step
does, the most accurate step (the trial's best attempt, so the Pareto front still shows
it). Every step's (bits, validation accuracy) is recorded as the trial's `path` attribute,
so one training run gives a curve instead of one point. The path stops early once a step
falls more than `stop_margin` below the target: later steps only shrink further.

Without a path, the trial is `mincap.compression.qat.train_compressed`, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from mincap.compression.path import compression_path
from mincap.compression.qat import Compressed, train_compressed
from mincap.config import CompressConfig, TrainConfig
from mincap.data import Splits
from mincap.evaluation.selection import most_accurate
from mincap.format.container import decode
from mincap.nets.models import Spec

__all__ = ["train_trial"]


def train_trial(spec: Spec, splits: Splits, train_cfg: TrainConfig, comp: CompressConfig, *, target: float,
                on_epoch: Callable | None = None, device=None, stop_margin: float | None = None,
                pretrained=None) -> tuple[Compressed, dict | None]:
    """(the trial's result, its path record or None) -- see the module docstring.

    `pretrained`: the float + QAT phase already trained (`mincap.training.batched.train_many`)."""
    if not comp.path:
        res = train_compressed(spec, splits, train_cfg, comp, on_epoch=on_epoch, device=device, pretrained=pretrained)
        return res, None
    stop_below = None if stop_margin is None else target - stop_margin
    path = compression_path(spec, splits, train_cfg, replace(comp, path=""), steps=comp.path, target=target,
                            on_epoch=on_epoch, device=device, stop_below=stop_below, pretrained=pretrained)
    pick = path.chosen or most_accurate(path.steps, bits=lambda s: s.artifact_bits, val_acc=lambda s: s.val_acc)
    dec = decode(pick.artifact)
    res = Compressed(artifact=pick.artifact, model=dec.model, spec=dec.spec, size=dec.size, val_acc=pick.val_acc,
                     history=path.history, train_time_s=path.train_time_s)
    record = {
        "steps": [{"step": s.index, "description": s.description, "artifact_bits": s.artifact_bits,
                   "val_acc": s.val_acc} for s in path.steps],
        "chosen": pick.index,
        "feasible": path.chosen is not None,
    }
    return res, record
