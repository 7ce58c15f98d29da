"""A sub-network out of the supernet as an ordinary mincap network, its batch norm re-estimated.

`extract(net, cfg)` gives a `Subnet`: the `Spec` of the sub-network, a state dict that
`mincap.nets.models.build(spec)` loads (the sliced latent weights, batch norm's affine
parameters and statistics), and the learned LSQ step of every layer at its bit width.
`Subnet.model()` builds that network with `mincap.nets.quant`'s fake quantizers attached at
those widths and steps (and the magnitude sparsity mask, when the configuration has one), so
`mincap.format.writer.export` writes it as any trained network.

`recalibrate_bn` re-estimates the batch-norm statistics of a built network on at most
`n_images` TRAIN images (BigNAS / OFA: a sub-network's statistics are not the supernet's),
with its weights quantized as they will be stored. `calibrated_model` is both steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from mincap.data import Split, Splits
from mincap.nets.models import Spec, build, prepare
from mincap.nets.quant import (
    QuantSpec,
    attach_fake_quant,
    attach_sparsity,
    quant_layers,
    quantizer_of,
)
from mincap.oneshot.space import SubnetConfig
from mincap.oneshot.supernet import Supernet

__all__ = ["CALIB_IMAGES", "Subnet", "bn_stats", "calibrated_model", "extract", "recalibrate_bn"]

CALIB_IMAGES = 2000  # train images for the batch-norm statistics of one sub-network


@dataclass(frozen=True)
class Subnet:
    """One extracted sub-network: `build(spec)` loads `state`; `log_steps` per layer (None:
    float)."""

    cfg: SubnetConfig
    spec: Spec
    state: dict[str, torch.Tensor]
    log_steps: tuple[torch.Tensor, ...] | None
    per_channel: bool

    def model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The built network with its fake quantizers (enabled) at the learned steps."""
        m = build(self.spec)
        m.load_state_dict(self.state)
        m = m.to(device)
        if self.cfg.sparsity > 0:  # the mask first: parametrizations apply in registration order
            attach_sparsity(m, self.cfg.sparsity)
        if self.cfg.bits is not None:
            qs = [QuantSpec(b, self.per_channel, True, "lsq") for b in self.cfg.bits]
            attach_fake_quant(m, qs, enabled=True)
            with torch.no_grad():
                for layer, ls in zip(quant_layers(m), self.log_steps):
                    fq = quantizer_of(layer)
                    fq.log_step.copy_(ls.to(fq.log_step.device))
                    fq.initialized = True  # the learned step, not a fresh MSE start
        return m


def _batch_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def extract(net: Supernet, cfg: SubnetConfig, *, bn_stats=None) -> Subnet:
    """Sub-network `cfg` of `net` as a `Subnet` (on the CPU). `bn_stats`: its (mean, var) per
    block, else batch norm's defaults (0, 1) until `recalibrate_bn` sets them."""
    net.space.check(cfg)
    spec = net.space.spec(cfg)
    model = build(spec)
    steps = []
    with torch.no_grad():
        for layer, (w, b, slot, wi) in zip(quant_layers(model), net.layers(cfg)):
            layer.weight.copy_(w)
            if b is not None:
                layer.bias.copy_(b)
            if cfg.bits is not None:
                bits = cfg.bits[len(steps)]
                steps.append(net.log_step(slot, wi, bits, w, store=False).detach().cpu().clone())
        for i, (bn, blk) in enumerate(zip(_batch_norms(model), net.blocks)):
            c = cfg.widths[i]
            bn.weight.copy_(blk["bn"].weight[:c])
            bn.bias.copy_(blk["bn"].bias[:c])
            if bn_stats is not None:
                bn.running_mean.copy_(bn_stats[i][0])
                bn.running_var.copy_(bn_stats[i][1])
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    log_steps = None if cfg.bits is None else tuple(steps)
    return Subnet(cfg, spec, state, log_steps, net.space.per_channel)


def bn_stats(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(running mean, running var) of each batch norm of a built network, in order."""
    return [(bn.running_mean.detach().clone(), bn.running_var.detach().clone())
            for bn in _batch_norms(model)]


def calib_indices(n: int, n_images: int, seed: int) -> torch.Tensor:
    """Which train images calibrate: the first `n_images` of a seeded permutation (all classes)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(n, n_images)]


def recalibrate_bn(model: nn.Module, train: Split, *, n_images: int = CALIB_IMAGES,
                   batch_size: int = 1000, seed: int = 0) -> None:
    """Set every batch norm's statistics of `model` to those of `n_images` images of `train`.

    The cumulative average of the batches' statistics (momentum None): with one batch, the
    images' exact mean and unbiased variance. The network runs as it is (fake quantizers on:
    the statistics of the weights the file will hold). Reads nothing but `train`."""
    device = next(model.parameters()).device
    bns = _batch_norms(model)
    if not bns:
        return
    idx = calib_indices(len(train), n_images, seed)
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(idx), batch_size):
            model(prepare(train.x[idx[i : i + batch_size]].to(device)))
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    model.train(was_training)


def calibrated_model(net: Supernet, cfg: SubnetConfig, splits: Splits, *,
                     n_images: int = CALIB_IMAGES, seed: int = 0,
                     device: str | torch.device | None = None) -> nn.Module:
    """Sub-network `cfg` built, fake-quantized, batch norm re-estimated on `splits.train` only."""
    device = device or next(net.parameters()).device
    model = extract(net, cfg).model(device)
    recalibrate_bn(model, splits.train, n_images=n_images, seed=seed)
    model.eval()
    return model
