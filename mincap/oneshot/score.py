"""A sub-network's honest score: its `.mincap` file written, decoded, the DECODED network scored.

`score_subnet` is one one-shot candidate: extract the sub-network from the supernet,
re-estimate its batch norm on at most 2,000 train images, export it with the project's
writer (batch norm folded, LSQ codes at the configured widths, the side information at
`side_bits`), decode the bytes with the project's decoder, and measure the decoded network
on the validation split. The test set is never read. `score_model` is the last three steps
for any built, fake-quantized network (the promotion's fine-tuned one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from mincap.data import Splits
from mincap.format.container import decode
from mincap.format.writer import export
from mincap.nets.models import Spec
from mincap.oneshot.extract import CALIB_IMAGES, calibrated_model
from mincap.oneshot.space import SubnetConfig
from mincap.oneshot.supernet import Supernet
from mincap.training.engine import evaluate

__all__ = ["SIDE_BITS", "Scored", "score_model", "score_subnet"]

# The study's paths all begin with side=6 (v2's chosen network: 8,304 -> 7,928 bits at 99.04%).
SIDE_BITS = 6


@dataclass(frozen=True)
class Scored:
    """A written, decoded and evaluated network: `artifact` decodes to a network of `val_acc`."""

    artifact: bytes
    spec: Spec  # as stored (batch norm folded)
    size: dict  # the decoder's report: artifact_bits, n_params, n_nonzero, nominal_bits, layers
    val_acc: float
    time_s: float

    @property
    def artifact_bits(self) -> int:
        return int(self.size["artifact_bits"])


def score_model(model: nn.Module, spec: Spec, splits: Splits, *, side_bits: int = SIDE_BITS,
                eval_batch_size: int = 5000, t0: float | None = None) -> Scored:
    """Export `model` (built from `spec`, quantizers attached), decode, evaluate the decoded net."""
    t0 = time.perf_counter() if t0 is None else t0
    artifact = export(model, spec, side_bits)
    dec = decode(artifact)
    device = next(model.parameters()).device
    val_acc, _ = evaluate(dec.model.to(device), splits.val, batch_size=eval_batch_size)
    return Scored(artifact, dec.spec, dec.size, val_acc, time.perf_counter() - t0)


def score_subnet(net: Supernet, cfg: SubnetConfig, splits: Splits, *, side_bits: int = SIDE_BITS,
                 calib_images: int = CALIB_IMAGES, seed: int = 0,
                 device: str | torch.device | None = None) -> tuple[Scored, nn.Module]:
    """(the score of sub-network `cfg`, its calibrated fake-quantized network for fine-tuning)."""
    t0 = time.perf_counter()
    model = calibrated_model(net, cfg, splits, n_images=calib_images, seed=seed, device=device)
    return score_model(model, net.space.spec(cfg), splits, side_bits=side_bits, t0=t0), model
