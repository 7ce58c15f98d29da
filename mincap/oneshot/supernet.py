"""The weight-shared supernet: every sub-network of a `SupernetSpace` is a slice of one weight set.

Elastic width: block i of a sub-network uses the first `widths[i]` output channels of the
supernet's block (and the first channels of its input), so sub-networks share weights the
way slimmable networks and Once-for-All do. `sort_channels` reorders each block's channels
by importance so that slicing keeps the strongest (OFA's channel sorting). Elastic depth:
a sub-network of depth d runs the first d blocks; each depth has its own head (the head
reads a different block at each depth; a GAP head is about 200 parameters, and a shared one
would have to serve three different feature maps). A `flatten` head's weight is sliced by
whole channels: its columns are channel-major, so a width-k sub-network uses the first k x
(height x width) of them.

Batch norm: the affine parameters are shared and sliced; no running statistics are kept
while training (every step is a different sub-network: BigNAS and OFA re-estimate the
statistics per sub-network afterwards, `mincap.oneshot.extract.recalibrate_bn`). A forward
pass uses the batch's statistics, or `bn_stats` (one (mean, var) per block) when given.

Bits: with `cfg.bits`, every conv/linear weight is fake-quantized by LSQ with a learned
step taken from a table: one step per (layer, width, bits) (`step_per_width`), or per
(layer, bits) shared by all widths. Per width because one step per layer must fit the
slice it quantizes, and the largest |w| of the first 8 channels is not that of 20; the
table is small (12 layers x 7 widths x 4 bit widths in the default space) and each entry
starts at the MSE-optimal step of the slice it first quantizes (as `mincap.nets.quant` starts
LSQ), so a rarely drawn entry is still a good step. The fake quantizer is `mincap.nets.quant`'s LSQ
arithmetic, so the extracted network (`mincap.oneshot.extract`) computes exactly what the
supernet computes at that configuration.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mincap.nets.quant import code_range, mse_scale
from mincap.oneshot.space import SubnetConfig, SupernetSpace

__all__ = ["BN_EPS", "Supernet", "lsq_fake_quant", "sort_channels"]

BN_EPS = 1e-5  # nn.BatchNorm2d's default: the extracted network's batch norm uses it too


def lsq_fake_quant(w: torch.Tensor, log_step: torch.Tensor, bits: int) -> torch.Tensor:
    """LSQ quantize-dequantize of `w` with step exp(log_step) ((C,) or (1,)): the arithmetic of
    `mincap.nets.quant`'s FakeQuant (gradient of the step scaled by 1/sqrt(n * qmax), straight-
    through rounding), operation for operation, so both give the same numbers."""
    lo, hi = code_range(bits, True)
    n_per_scale = w.numel() // log_step.numel()
    g = 1.0 / (n_per_scale * hi) ** 0.5
    t = log_step * g + (log_step * (1 - g)).detach()  # value log_step, gradient * g
    s = t.exp().reshape((-1,) + (1,) * (w.dim() - 1))
    v = (w / s).clamp(lo, hi)
    r = torch.round(v)
    return (v + (r - v).detach()) * s


class Supernet(nn.Module):
    """All sub-networks of `space` in one module; `forward(x, cfg)` runs sub-network `cfg`."""

    def __init__(self, space: SupernetSpace) -> None:
        super().__init__()
        self.space = space
        sp = space
        c_prev = sp.in_shape[0]
        blocks = []
        for i in range(sp.depth[1]):
            c = sp.max_width(i)
            k = sp.kernel0 if i == 0 else sp.kernel
            blk = nn.ModuleDict()
            if i > 0 and sp.separable:
                blk["dw"] = nn.Conv2d(c_prev, c_prev, k, groups=c_prev)
                blk["pw"] = nn.Conv2d(c_prev, c, 1, bias=False)
            else:
                blk["conv"] = nn.Conv2d(c_prev, c, k, bias=False)
            blk["bn"] = nn.BatchNorm2d(c, eps=BN_EPS, track_running_stats=False)
            blocks.append(blk)
            c_prev = c
        self.blocks = nn.ModuleList(blocks)
        # Positions per channel the head reads at each depth; built once here because
        # `head_positions` derives a Spec, and `layers` runs on every forward.
        self.head_hw = {d: sp.head_positions(d) for d in range(sp.depth[0], sp.depth[1] + 1)}
        self.heads = nn.ModuleList(nn.Linear(sp.max_width(d - 1) * self.head_hw[d], sp.n_classes)
                                   for d in range(sp.depth[0], sp.depth[1] + 1))
        # The learned steps: one Parameter per (layer slot, width, bits), so that AdamW leaves an
        # entry alone in a step that did not use it (its grad stays None) instead of moving it
        # on stale momentum. `_ready[entry]` = how many leading channels hold a learned step.
        self._slots = self._layer_slots()
        n_choices = max(len(sp.width_choices(i)) for i in range(sp.depth[1]))
        self.n_widths = n_choices if sp.step_per_width else 1
        self.n_bits = len(sp.bit_choices())
        self.steps = nn.ParameterList(
            nn.Parameter(torch.zeros(self._n_scales(m))) for m in self._slots
            for _ in range(self.n_widths * self.n_bits))
        self._ready: dict[int, int] = {}

    # -- layers and their steps -----------------------------------------------------------
    def _layer_slots(self) -> list[nn.Module]:
        """Every conv/linear module, in a fixed order: the blocks' layers, then the heads."""
        mods = []
        for blk in self.blocks:
            mods += [blk[name] for name in ("conv", "dw", "pw") if name in blk]
        return mods + list(self.heads)

    def _n_scales(self, m: nn.Module) -> int:
        return m.weight.shape[0] if self.space.per_channel else 1

    def _entry(self, slot: int, width_index: int, bits: int) -> int:
        return (slot * self.n_widths + width_index) * self.n_bits + bits - self.space.bits[0]

    def log_step(self, slot: int, width_index: int, bits: int, w: torch.Tensor, *,
                 store: bool = True) -> torch.Tensor:
        """The learned log-step for quantizing slice `w` of layer `slot` at `bits`.

        Channels never quantized before get the MSE-optimal step of this slice: kept in the
        table with `store` (training), only returned without (extraction leaves the supernet
        as it was)."""
        idx = self._entry(slot, width_index, bits)
        p = self.steps[idx]
        n = w.shape[0] if self.space.per_channel else 1
        ready = self._ready.get(idx, 0)
        if ready >= n:
            return p[:n]
        init = mse_scale(w.detach(), bits, self.space.per_channel).log()
        if not store:
            return torch.cat([p[:ready].detach(), init[ready:n]])
        with torch.no_grad():
            p[ready:n] = init[ready:n]
        self._ready[idx] = n
        return p[:n]

    def steps_ready(self) -> int:
        return len(self._ready)

    def get_extra_state(self) -> dict:
        return {"ready": [[k, v] for k, v in sorted(self._ready.items())]}

    def set_extra_state(self, state: dict) -> None:
        self._ready = {int(k): int(v) for k, v in state["ready"]}

    def layers(self, cfg: SubnetConfig) -> list[tuple[torch.Tensor, torch.Tensor | None, int, int]]:
        """(weight slice, bias slice or None, slot, width index) of each conv/linear layer of
        `cfg`, in model order (`mincap.nets.quant.quant_layers` of the extracted network)."""
        sp, w = self.space, cfg.widths
        slot = {id(m): i for i, m in enumerate(self._slots)}

        def wi(block: int, width: int) -> int:
            return sp.width_choices(block).index(width) if sp.step_per_width else 0

        out = []
        for i, blk in enumerate(self.blocks[: cfg.depth]):
            c_in = w[i - 1] if i > 0 else sp.in_shape[0]
            if "dw" in blk:
                dw, pw = blk["dw"], blk["pw"]
                out.append((dw.weight[:c_in], dw.bias[:c_in], slot[id(dw)], wi(i - 1, c_in)))
                out.append((pw.weight[: w[i], :c_in].contiguous(), None, slot[id(pw)], wi(i, w[i])))
            else:
                conv = blk["conv"]
                conv_w = conv.weight[: w[i], :c_in].contiguous()
                out.append((conv_w, None, slot[id(conv)], wi(i, w[i])))
        head = self.heads[cfg.depth - sp.depth[0]]
        head_w = head.weight[:, : w[-1] * self.head_hw[cfg.depth]].contiguous()
        out.append((head_w, head.bias, slot[id(head)], wi(cfg.depth - 1, w[-1])))
        return out

    def weights(self, cfg: SubnetConfig, *,
                store: bool = True) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The (possibly fake-quantized) weight and bias of each layer of `cfg`."""
        out = []
        for li, (w, b, slot, wi) in enumerate(self.layers(cfg)):
            if cfg.bits is not None:
                bits = cfg.bits[li]
                w = lsq_fake_quant(w, self.log_step(slot, wi, bits, w, store=store), bits)
            out.append((w, b))
        return out

    # -- the forward pass -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, cfg: SubnetConfig, *, bn_stats=None) -> torch.Tensor:
        """Logits of sub-network `cfg` on prepared inputs `x` (batch statistics unless
        `bn_stats`)."""
        sp = self.space
        ws = iter(self.weights(cfg, store=self.training))
        h = x
        for i, blk in enumerate(self.blocks[: cfg.depth]):
            k = sp.kernel0 if i == 0 else sp.kernel
            pad = k // 2 if sp.padding == "same" else 0
            if "dw" in blk:
                w, b = next(ws)
                h = F.conv2d(h, w, b, 1, pad, 1, w.shape[0])
                h = F.conv2d(h, next(ws)[0])
            else:
                h = F.conv2d(h, next(ws)[0], None, 1, pad)
            c = cfg.widths[i]
            bn = blk["bn"]
            if bn_stats is None:
                h = F.batch_norm(h, None, None, bn.weight[:c], bn.bias[:c], True, 0.0, BN_EPS)
            else:
                mean, var = bn_stats[i]
                h = F.batch_norm(h, mean, var, bn.weight[:c], bn.bias[:c], False, 0.0, BN_EPS)
            h = F.relu(h)
            if i < sp.pools:
                h = F.max_pool2d(h, 2)
        h = F.adaptive_avg_pool2d(h, 1).flatten(1) if sp.head == "gap" else h.flatten(1)
        w, b = next(ws)
        return F.linear(h, w, b)


def _importance(net: Supernet, block: int) -> torch.Tensor:
    """Importance of each output channel of `block`: |gamma| times the L1 norm of the weights that
    read it (the next block's and the head's). Batch norm normalizes the producing conv's output,
    so its own weight norm says nothing about how large the channel is; gamma does, and how much
    the consumers use it decides what removing it costs. A separable consumer reads channel j
    through depthwise filter j then column j of the 1x1 conv: the L1 norm of that equivalent
    full filter is ||dw_j||_1 * ||pw[:, j]||_1."""
    sp = net.space
    score = torch.zeros(sp.max_width(block), device=net.blocks[block]["bn"].weight.device)
    if block + 1 < len(net.blocks):
        nxt = net.blocks[block + 1]
        if "dw" in nxt:
            score += nxt["dw"].weight.abs().sum((1, 2, 3)) * nxt["pw"].weight.abs().sum((0, 2, 3))
        else:
            score += nxt["conv"].weight.abs().sum((0, 2, 3))
    if sp.depth[0] <= block + 1:
        hw = net.head_hw[block + 1]
        head = net.heads[block + 1 - sp.depth[0]].weight
        score += head.abs().reshape(head.shape[0], -1, hw).sum((0, 2))
    return net.blocks[block]["bn"].weight.abs() * score


def _permute_(p: torch.Tensor, dim: int, perm: torch.Tensor, opt) -> None:
    """Reorder `p` along `dim`, and its optimizer moments with it (Adam's state is per entry)."""
    with torch.no_grad():
        p.copy_(p.index_select(dim, perm))
        state = opt.state.get(p, {}) if opt is not None else {}
        for v in state.values():
            if torch.is_tensor(v) and v.shape == p.shape:
                v.copy_(v.index_select(dim, perm))


def sort_channels(net: Supernet, opt=None) -> list[torch.Tensor]:
    """Reorder every block's channels by importance (`_importance`), most important first, in place.

    The function of the largest network does not change (the same channels, in another order),
    but a narrower slice now keeps the strongest channels. Only before any learned step exists:
    per-channel steps and per-width steps would otherwise describe other channels. Returns the
    permutation of each block."""
    if net.steps_ready():
        raise RuntimeError("sort_channels: learned steps exist; sort before quantization starts")
    perms = []
    for g, blk in enumerate(net.blocks):
        perm = torch.argsort(_importance(net, g).detach(), descending=True, stable=True)
        _permute_((blk["pw"] if "pw" in blk else blk["conv"]).weight, 0, perm, opt)
        _permute_(blk["bn"].weight, 0, perm, opt)
        _permute_(blk["bn"].bias, 0, perm, opt)
        if g + 1 < len(net.blocks):
            nxt = net.blocks[g + 1]
            if "dw" in nxt:
                _permute_(nxt["dw"].weight, 0, perm, opt)
                _permute_(nxt["dw"].bias, 0, perm, opt)
                _permute_(nxt["pw"].weight, 1, perm, opt)
            else:
                _permute_(nxt["conv"].weight, 1, perm, opt)
        if net.space.depth[0] <= g + 1:
            # a flatten head's columns come in groups of positions per channel: move the groups
            hw = net.head_hw[g + 1]
            cols = (perm[:, None] * hw + torch.arange(hw, device=perm.device)).flatten()
            _permute_(net.heads[g + 1 - net.space.depth[0]].weight, 1, cols, opt)
        perms.append(perm)
    return perms
