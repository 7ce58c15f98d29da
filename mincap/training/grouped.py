"""N small networks of one structure as one computation: stacked weights, grouped convs, AdamW on stacks.

This is the arithmetic under `mincap.training.batched.train_many`: it holds N members' networks as
one `Stack` and computes what each member's own network would compute, within float32
noise (figures in `mincap.training.batched`).

Max-width masking
    A stack has the shapes of the members' largest width per layer (`max_spec`). Each
    member's weights sit in the leading slice of every tensor (a flatten head's first
    linear layer is embedded per input channel), everything else is zero, and the
    gradient outside the member's slice is masked to zero. Padded channels then stay
    exactly zero through conv -> batch norm -> activation -> pool (their gamma and beta
    are 0) and padded inputs meet zero weights, so a member computes what it computes
    alone, plus exact zeros. The cost: every member pays for the largest width.

Grouped forward
    Parameters are stacked leaf tensors of shape (N, ...), batch-norm running statistics
    stacked buffers. Activations are (B, N*C, H, W) -- member i's channels in block i --
    so a conv is one grouped convolution (groups=N), batch norm runs on N*C channels
    (each channel's statistics from its own member's batch), pooling and activations are
    unchanged, and the head's linear layers are batched matmuls on (N, B, features). The
    stacked running statistics are updated in place.

Fake quantization on stacks
    `mincap.nets.quant`'s quantize-dequantize with a straight-through gradient, per member and
    layer: bit widths (1-bit and asymmetric included) and on/off may differ by member;
    per-channel and symmetric must agree per layer inside a stack.

AdamW on stacks
    Every member keeps its own optimizer: `StackedAdamW` follows `torch.optim.AdamW`'s
    single-tensor update formula operation by operation, with per-member learning rate
    (a row of a precomputed table) and weight decay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from mincap.errors import MincapError
from mincap.nets.models import Conv, Spec, build
from mincap.nets.quant import QuantSpec, code_range, quant_layers
from mincap.training.engine import init_model

__all__ = ["QuantRows", "Stack", "StackedAdamW", "fake_quant", "forward", "max_spec", "program"]

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # torch.optim.AdamW's defaults, which mincap.training.engine uses


def max_spec(specs: Sequence[Spec]) -> Spec:
    """The spec with the largest width per layer among `specs` (which must share a structure)."""
    s0 = specs[0]
    convs = tuple(
        Conv(max(s.convs[i].channels for s in specs), c.kernel, c.stride, c.pool, c.pad)
        for i, c in enumerate(s0.convs)
    )
    hidden = tuple(max(s.hidden[i] for s in specs) for i in range(len(s0.hidden)))
    return replace(s0, convs=convs, hidden=hidden)


# --- one member's tensors in the max-width shapes ---------------------------------------------


def _flatten_linear_key(net: nn.Module) -> str | None:
    """State-dict prefix of the first linear layer after a flatten head (its inputs are channel-major)."""
    spec = net.spec
    if spec.family != "cnn" or spec.head != "flatten":
        return None
    for name, mod in net.classifier.named_children():
        if isinstance(mod, nn.Linear):
            return f"classifier.{name}."
    return None


def _last_channels(spec: Spec) -> int:
    return spec.convs[-1].channels if spec.convs else 0


def _view(t: torch.Tensor, key: str, flat_key: str | None, channels: int) -> torch.Tensor:
    """`t` as (out, C, H*W) for the flatten-head linear weight, else `t` itself."""
    if flat_key is not None and key == flat_key + "weight":
        return t.reshape(t.shape[0], channels, -1)
    return t


def _embed(small, big_shape, key: str, flat_key: str | None, c_small: int, c_big: int, fill: float = 0.0):
    big = torch.full(big_shape, fill, dtype=small.dtype, device=small.device)
    bv, sv = _view(big, key, flat_key, c_big), _view(small, key, flat_key, c_small)
    bv[tuple(slice(0, s) for s in sv.shape)] = sv
    return big


def _extract(big, small_shape, key: str, flat_key: str | None, c_small: int, c_big: int):
    bv = _view(big, key, flat_key, c_big)
    if flat_key is not None and key == flat_key + "weight":
        return bv[: small_shape[0], :c_small, :].reshape(small_shape).clone()
    return bv[tuple(slice(0, s) for s in small_shape)].clone()


# --- the forward program -------------------------------------------------------------------------


def program(net: nn.Module) -> list[tuple]:
    """The layers of a built mincap network as (kind, state-dict prefix, argument) in forward order."""
    prog: list[tuple] = []
    for part in ("features", "classifier"):
        for name, mod in getattr(net, part).named_children():
            key = f"{part}.{name}"
            if isinstance(mod, nn.Conv2d):
                prog.append(("conv", key, (mod.stride, mod.padding)))
            elif isinstance(mod, nn.BatchNorm2d):
                prog.append(("bn", key, (mod.eps, mod.momentum)))
            elif isinstance(mod, nn.MaxPool2d):
                prog.append(("pool", key, mod.kernel_size))
            elif isinstance(mod, nn.AdaptiveAvgPool2d):
                prog.append(("gap", key, None))
            elif isinstance(mod, nn.Flatten):
                prog.append(("flatten", key, None))
            elif isinstance(mod, nn.Dropout):
                prog.append(("dropout", key, mod.p))
            elif isinstance(mod, nn.Linear):
                prog.append(("linear", key, None))
            else:  # an elementwise activation module (stateless)
                prog.append(("act", key, mod))
    return prog


def forward(prog: list[tuple], p: dict, b: dict, x: torch.Tensor, n: int, training: bool) -> torch.Tensor:
    """Logits (N, B, classes) of N members from x (B, N*C, H, W): member i's images in channels [i*C, (i+1)*C).

    `p` holds the stacked parameters, `b` the stacked batch-norm buffers (updated in place
    when `training`).
    """
    layout = "bchw"
    for kind, key, arg in prog:
        if kind in ("flatten", "gap") and layout == "bchw":
            if kind == "gap":
                x = F.adaptive_avg_pool2d(x, 1)
            x = x.reshape(x.shape[0], n, -1).transpose(0, 1)  # (N, B, F)
            layout = "nbf"
        elif kind == "conv":
            w = p[key + ".weight"]
            bias = p.get(key + ".bias")
            x = F.conv2d(x, w.reshape(-1, *w.shape[2:]), None if bias is None else bias.reshape(-1),
                         arg[0], arg[1], 1, n)
        elif kind == "bn":
            eps, momentum = arg
            if training:
                b[key + ".num_batches_tracked"].add_(1)
            x = F.batch_norm(x, b[key + ".running_mean"].view(-1), b[key + ".running_var"].view(-1),
                             p[key + ".weight"].reshape(-1), p[key + ".bias"].reshape(-1), training, momentum, eps)
        elif kind == "pool":
            x = F.max_pool2d(x, arg)
        elif kind == "dropout":
            x = F.dropout(x, arg, training)
        elif kind == "linear":
            x = torch.baddbmm(p[key + ".bias"][:, None, :], x, p[key + ".weight"].transpose(1, 2))
        elif kind == "act":
            x = arg(x)
    return x


# --- fake quantization on stacks -----------------------------------------------------------------


def fake_quant(w, m, hi, one_bit, en, per_channel: bool, symmetric: bool) -> torch.Tensor:
    """`mincap.nets.quant`'s fake quantization of the stacked weight `w` (N, out, ...) with mask `m`.

    `hi` (largest code span), `one_bit` and `en` (enabled) have one entry per member, so
    members may differ in bit width and in whether fake quantization is on. Padded entries
    quantize to 0; a 1-bit scale is the mean |w| over the member's own entries.
    """
    n = w.shape[0]
    tiny = torch.finfo(torch.float32).tiny
    wd = w.detach()
    flat = wd.reshape(n, wd.shape[1], -1) if per_channel else wd.reshape(n, 1, -1)  # (N, rows, k)
    mflat = m.reshape(flat.shape)
    hi_r, hi_e = hi[:, None], hi[:, None, None]  # per row, per entry
    if symmetric:
        s_many = flat.abs().amax(dim=2) / hi_r
        s_one = (flat.abs() * mflat).sum(dim=2) / mflat.sum(dim=2).clamp_min(1.0)
        scale = torch.where(one_bit[:, None], s_one, s_many).clamp_min(tiny * 1e6)
        codes = torch.round(flat / scale[..., None])
        codes = torch.where(one_bit[:, None, None], torch.where(flat >= 0, 1.0, -1.0), codes)
        codes = torch.clamp(codes, -hi_e, hi_e)
        wq = codes * scale[..., None]
    else:
        wmin = flat.amin(dim=2).clamp(max=0.0)
        wmax = flat.amax(dim=2).clamp(min=0.0)
        scale = ((wmax - wmin) / hi_r).clamp_min(tiny * 1e6)
        zp = torch.clamp(torch.round(-wmin / scale), torch.zeros_like(hi_r), hi_r)
        codes = torch.clamp(torch.round(flat / scale[..., None]) + zp[..., None], torch.zeros_like(hi_e), hi_e)
        wq = (codes - zp[..., None]) * scale[..., None]
    wq = wq.reshape(w.shape) * m
    return torch.where(en.reshape((n,) + (1,) * (w.dim() - 1)), w + (wq - w).detach(), w)


@dataclass
class QuantRows:
    """Per member and conv/linear layer: largest code span `hi`, 1-bit flag `one`, quantizer present `has`;
    per member: the first fake-quant epoch `switch`. `flags[layer]` = (per_channel, symmetric)."""

    keys: list[str]
    flags: list[tuple[bool, bool]]
    hi: torch.Tensor
    one: torch.Tensor
    has: torch.Tensor
    switch: torch.Tensor

    @classmethod
    def build(cls, keys: list[str], plans: Sequence[tuple | None], device) -> QuantRows:
        flags = []
        for li in range(len(keys)):
            kinds = {(q.per_channel, q.symmetric) for p in plans if p is not None for q in [p[0][li]] if q is not None}
            if len(kinds) > 1:
                raise MincapError("train_many: one group's quantizers must share per_channel and symmetric per layer")
            flags.append(kinds.pop() if kinds else (True, True))
        rows: list[list[QuantSpec | None]] = []
        for p in plans:
            qs = list(p[0]) if p is not None else [None] * len(keys)
            if len(qs) != len(keys):
                raise MincapError(f"quant: {len(qs)} bit widths for {len(keys)} conv/linear layers")
            # The stacked fake quantizer is the max-|w| one; learned (lsq) or MSE-clipped scales
            # would silently train as max-|w| here, so such plans are refused.
            other = {q.method for q in qs if q is not None} - {"max"}
            if other:
                raise MincapError(f"train_many: batched training supports the max quantizer only, not {sorted(other)}")
            rows.append(qs)
        return cls(
            keys, flags,
            hi=torch.tensor([[1.0 if q is None else float(code_range(q.bits, q.symmetric)[1]) for q in r]
                             for r in rows], device=device),
            one=torch.tensor([[q is not None and q.bits == 1 for q in r] for r in rows], device=device),
            has=torch.tensor([[q is not None for q in r] for r in rows], device=device),
            switch=torch.tensor([p[1] if p is not None else 0 for p in plans], device=device),  # has: all False
        )

    def enabled(self, epoch: int) -> torch.Tensor:
        """(N, layers): fake quantization on in epoch index `epoch` (`mincap.compression.qat`'s switch)."""
        return self.has & (epoch >= self.switch)[:, None]

    def select(self, sel: torch.Tensor) -> None:
        self.hi, self.one, self.has, self.switch = self.hi[sel], self.one[sel], self.has[sel], self.switch[sel]


# --- the stack of members --------------------------------------------------------------------------


@dataclass
class Stack:
    """N members' networks in the max-width shapes; member i is row i of every tensor."""

    specs: list[Spec]
    prog: list[tuple]
    flat_key: str | None
    c_big: int  # channels of the max-width last conv (the flatten head's input channels)
    params: dict[str, torch.Tensor]  # (N, ...) leaves that require grad
    buffers: dict[str, torch.Tensor]  # (N, ...) batch-norm statistics
    mask: dict[str, torch.Tensor]  # 1 on each member's own entries, 0 on padding
    full: dict[str, bool]  # nothing padded in this tensor: skip masking
    shapes: list[dict[str, torch.Size]]  # each member's own state-dict shapes
    quant: QuantRows | None

    @classmethod
    def build(cls, specs: Sequence[Spec], seeds: Sequence[int], plans: Sequence[tuple | None], device) -> Stack:
        """Each member's own initial weights (`init_model(spec, seed)`, the solo run's) embedded in one stack.

        `plans[i]` is member i's `(QuantSpec | None per conv/linear layer, switch epoch)` or None.
        """
        big = build(max_spec(specs)).to(device)
        flat_key = _flatten_linear_key(big)
        c_big = _last_channels(big.spec)
        big_state = big.state_dict()
        param_names = [k for k, _ in big.named_parameters()]
        stacks: dict[str, list] = {k: [] for k in big_state}
        masks: dict[str, list] = {k: [] for k in param_names}
        shapes = []
        for spec, seed in zip(specs, seeds):
            sd = init_model(spec, seed, device).state_dict()
            shapes.append({k: v.shape for k, v in sd.items()})
            c_small = _last_channels(spec)
            for k, v in sd.items():
                fill = 1.0 if k.endswith("running_var") else 0.0
                stacks[k].append(_embed(v, big_state[k].shape, k, flat_key, c_small, c_big, fill))
                if k in masks:
                    masks[k].append(_embed(torch.ones_like(v), big_state[k].shape, k, flat_key, c_small, c_big))
        mask = {k: torch.stack(masks[k]) for k in param_names}
        quant = None
        if any(p is not None for p in plans):
            name = {id(mod): n for n, mod in big.named_modules()}
            keys = [f"{name[id(layer)]}.weight" for layer in quant_layers(big)]  # the layers QAT quantizes
            quant = QuantRows.build(keys, plans, device)
        return cls(
            specs=list(specs), prog=program(big), flat_key=flat_key, c_big=c_big,
            params={k: torch.stack(stacks[k]).requires_grad_(True) for k in param_names},
            buffers={k: torch.stack(v) for k, v in stacks.items() if k not in mask},
            mask=mask, full={k: bool(v.all()) for k, v in mask.items()}, shapes=shapes, quant=quant,
        )

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def device(self) -> torch.device:
        return next(iter(self.mask.values())).device

    def logits(self, x: torch.Tensor, epoch: int, training: bool) -> torch.Tensor:
        """`forward` of all members, with fake quantization where on in epoch index `epoch`."""
        p = self.params
        if self.quant is not None:
            q, en = self.quant, self.quant.enabled(epoch)
            p = dict(p)
            for li, k in enumerate(q.keys):
                p[k] = fake_quant(p[k], self.mask[k], q.hi[:, li], q.one[:, li], en[:, li], *q.flags[li])
        return forward(self.prog, p, self.buffers, x, len(self), training)

    def member_state(self, j: int) -> dict[str, torch.Tensor]:
        """Member j's state dict in its own shapes (copies)."""
        c_small = _last_channels(self.specs[j])
        return {k: _extract(self.params[k].detach()[j] if k in self.params else self.buffers[k][j], shape, k,
                            self.flat_key, c_small, self.c_big)
                for k, shape in self.shapes[j].items()}

    def select(self, keep: list[int]) -> torch.Tensor:
        """Keep only the members `keep` (row indices, in order); returns them as an index tensor."""
        sel = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.specs = [self.specs[j] for j in keep]
        self.shapes = [self.shapes[j] for j in keep]
        self.params = {k: p.detach().index_select(0, sel).requires_grad_(True) for k, p in self.params.items()}
        self.buffers = {k: b.index_select(0, sel) for k, b in self.buffers.items()}
        self.mask = {k: v.index_select(0, sel) for k, v in self.mask.items()}
        if self.quant is not None:
            self.quant.select(sel)
        return sel


class StackedAdamW:
    """`torch.optim.AdamW`'s single-tensor update on a `Stack`, per-member learning rate and weight decay.

    `lr_table` (N, steps) holds every member's learning rate for every step, built once in
    double precision (torch's AdamW computes with Python floats): per-step host-to-device
    copies would make a GPU wait for the host at every step.
    """

    def __init__(self, stack: Stack, lr_table: torch.Tensor, weight_decay: torch.Tensor) -> None:
        self.stack = stack
        self.lr_table = lr_table
        self.weight_decay = weight_decay
        self.exp_avg = {k: torch.zeros_like(p) for k, p in stack.params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(p) for k, p in stack.params.items()}
        self.steps = 0

    def step(self) -> None:
        """One update from the stack's gradients (masked to each member's own entries)."""
        self.steps += 1
        lr = self.lr_table[:, self.steps - 1]
        bc1 = 1 - BETA1**self.steps
        bc2_sqrt = (1 - BETA2**self.steps) ** 0.5
        # Per-member scalars are computed in double like torch's Python floats, then cast to float32.
        decay = (1 - lr * self.weight_decay).float()
        step_size = (lr / bc1).float()
        st = self.stack
        with torch.no_grad():
            for k, p in st.params.items():
                g = p.grad if st.full[k] else p.grad * st.mask[k]
                per_member = (-1,) + (1,) * (p.dim() - 1)
                p.mul_(decay.reshape(per_member))
                self.exp_avg[k].lerp_(g, 1 - BETA1)
                self.exp_avg_sq[k].mul_(BETA2).addcmul_(g, g, value=1 - BETA2)
                denom = (self.exp_avg_sq[k].sqrt() / bc2_sqrt).add_(EPS)
                p.sub_(step_size.reshape(per_member) * (self.exp_avg[k] / denom))

    def select(self, sel: torch.Tensor) -> None:
        """Keep the rows `sel` (after `Stack.select`)."""
        self.lr_table, self.weight_decay = self.lr_table.index_select(0, sel), self.weight_decay.index_select(0, sel)
        self.exp_avg = {k: v.index_select(0, sel) for k, v in self.exp_avg.items()}
        self.exp_avg_sq = {k: v.index_select(0, sel) for k, v in self.exp_avg_sq.items()}
