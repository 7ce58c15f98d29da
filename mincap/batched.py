"""Train many small networks at once: one batched computation per group of like-shaped trials.

`train_many(specs, splits, cfgs)` trains N networks and returns, for each, an ordinary
`nn.Module` holding its trained weights and a `TrainResult` -- what `mincap.train.train`
would have given that trial alone, within floating-point noise (see "Equivalence").

Grouping
    Trials go into one group when their networks share a layer *structure*: family,
    number of conv blocks with the same kernel/stride/pool/pad each, activation, batch
    norm, head, number of hidden layers, dropout, input shape and classes -- and the same
    batch size and label smoothing (the step count per epoch and the loss must agree).
    Widths (conv channels, hidden units), learning rate, weight decay, augmentation
    shift, seed and epochs may all differ inside a group.

Max-width masking
    A group runs as one network of the group's largest width per layer. Each member's
    weights sit in the leading slice of every tensor (a flatten head's first linear layer
    is embedded per input channel), everything else is zero, and the gradient outside
    the member's slice is masked to zero. Padded channels then stay exactly zero through
    conv -> batch norm -> activation -> pool (their gamma and beta are 0) and padded
    inputs meet zero weights, so a member computes what it computes alone, plus exact
    zeros. The cost is that every member pays for the largest width; group by width
    buckets (`max_waste`) where that matters.

Batched computation
    Parameters are stacked leaf tensors of shape (N, ...), batch-norm running statistics
    stacked buffers. Two engines compute the N forward passes (`engine=`):
    "grouped" (default) keeps activations as (B, N*C, H, W) -- member i's channels in
    block i -- so a conv is one grouped convolution (groups=N), batch norm runs on N*C
    channels (each channel's statistics from its own member's batch), pooling and
    activations are unchanged, and the head's linear layers are batched matmuls on
    (N, B, features); "vmap" runs `torch.func.functional_call` on the built module under
    `torch.func.vmap` (slower on CPU in a first look; kept for comparison and as a
    reference). Both update the stacked running statistics in place. Every member keeps
    its own optimizer: AdamW is written out on the stacked tensors with per-member learning rate (one-cycle factor
    of its own epochs) and weight decay, following `torch.optim.AdamW`'s single-tensor
    update formula operation by operation. The data stay on the device as one tensor;
    each member draws its own `randperm` order and `_shift` offsets from its own
    `torch.Generator().manual_seed(cfg.seed)` in the same order as `train` does, and the
    N batches are gathered and shifted in one indexing operation each.

Equivalence
    Weights start from `mincap.train.init_model(spec, cfg.seed)`; batch order,
    augmentation and the learning-rate schedule are the solo run's. Only the reduction
    order inside grouped convolutions and matmuls differs, so results agree to float32
    noise that grows with the number of steps (Adam's first steps amplify it for weights
    whose gradient is near zero). tests/test_batched.py checks relative L2 weight distance
    < 1e-3, per-epoch loss within 1e-4 and >= 99.5% identical validation predictions
    after 1-2 epochs on 512 images; measured: distance 2e-7 .. 1.2e-4, max |diff| <= 2.2e-4,
    predictions 100% identical.
    Dropout (`spec.dropout > 0`) draws other random masks than the solo run; such trials
    train correctly but not identically.

Members leave the group when they reach their own number of epochs, when their
`on_epoch` callback returns True (early stop) or when their loss becomes non-finite
(the `Trained.error` field then holds the `NonFiniteLoss`, like `train` would raise);
the remaining members go on with their stacks re-indexed. With `quant=` plans, members
train with `mincap.quant`'s fake quantization (per-member bit widths, 1-bit and
asymmetric included) from their own switch epoch, i.e. the whole first `train` call of
`mincap.compress.train_compressed`; pruning, fine-tuning, export stay per trial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from mincap.errors import MincapError, NonFiniteLoss
from mincap.train import EpochStats, TrainConfig, TrainResult, one_cycle

if TYPE_CHECKING:
    import torch

    from mincap.data import Splits
    from mincap.models import Spec

__all__ = ["Trained", "group_key", "group_trials", "max_spec", "qat_plan", "train_many"]

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # torch.optim.AdamW's defaults, which mincap.train uses


@dataclass
class Trained:
    """One member's outcome: the trained module, its `TrainResult`, and the error that ended it (or None)."""

    model: torch.nn.Module
    result: TrainResult
    error: BaseException | None = None

    def __iter__(self):  # `model, result = trained`
        return iter((self.model, self.result))


def group_key(spec: Spec, cfg: TrainConfig) -> tuple:
    """Trials with equal keys can share one batched computation (widths may differ)."""
    convs = tuple((c.kernel, c.stride, c.pool, c.pad) for c in spec.convs)
    return (spec.family, convs, len(spec.hidden), spec.activation, spec.batch_norm, spec.head, spec.dropout,
            spec.in_shape, spec.n_classes, cfg.batch_size, cfg.label_smoothing, cfg.eval_batch_size)


def max_spec(specs: Sequence[Spec]) -> Spec:
    """The spec with the largest width per layer among `specs` (which must share a structure)."""
    from mincap.models import Conv

    s0 = specs[0]
    convs = tuple(
        Conv(max(s.convs[i].channels for s in specs), c.kernel, c.stride, c.pool, c.pad)
        for i, c in enumerate(s0.convs)
    )
    hidden = tuple(max(s.hidden[i] for s in specs) for i in range(len(s0.hidden)))
    return replace(s0, convs=convs, hidden=hidden)


def _width_cost(spec: Spec) -> float:
    return float(sum(c.channels for c in spec.convs) + sum(spec.hidden))


def group_trials(specs: Sequence[Spec], cfgs: Sequence[TrainConfig], *, max_group: int = 0,
                 max_waste: float = 0.0) -> list[list[int]]:
    """Indices of trials grouped by `group_key`, in input order.

    `max_group` (> 0) caps a group's size. `max_waste` (> 0) splits a structure's trials,
    sorted by width, so that no member is padded to more than `1 + max_waste` times its
    own summed width; 0 puts all widths of a structure together.
    """
    by_key: dict[tuple, list[int]] = {}
    for i, (s, c) in enumerate(zip(specs, cfgs)):
        by_key.setdefault(group_key(s, c), []).append(i)
    groups: list[list[int]] = []
    for idx in by_key.values():
        if max_waste > 0:
            idx = sorted(idx, key=lambda i: _width_cost(specs[i]))
            cur: list[int] = []
            for i in idx:
                if cur and _width_cost(max_spec([specs[j] for j in cur + [i]])) > (1 + max_waste) * _width_cost(
                    specs[cur[0]]
                ):
                    groups.append(cur)
                    cur = []
                cur.append(i)
            if cur:
                groups.append(cur)
        else:
            groups.append(idx)
    if max_group > 0:
        groups = [g[k : k + max_group] for g in groups for k in range(0, len(g), max_group)]
    return groups


# --- embedding members into the max-width stack ----------------------------------------------


def _flatten_linear_key(spec: Spec) -> str | None:
    """State-dict prefix of the first linear layer after a flatten head (its inputs are channel-major)."""
    if spec.family != "cnn" or spec.head != "flatten":
        return None
    import torch.nn as nn

    from mincap.models import build

    for name, mod in build(spec).classifier.named_children():
        if isinstance(mod, nn.Linear):
            return f"classifier.{name}."
    return None


def _slices(shape) -> tuple:
    return tuple(slice(0, s) for s in shape)


def _view(t, key: str, flat_key: str | None, channels: int):
    """`t` as (out, C, H*W) for the flatten-head linear weight, else `t` itself."""
    if flat_key is not None and key == flat_key + "weight":
        return t.reshape(t.shape[0], channels, -1)
    return t


def _embed(small, big_shape, key: str, flat_key: str | None, c_small: int, c_big: int, fill: float = 0.0):
    import torch

    big = torch.full(big_shape, fill, dtype=small.dtype, device=small.device)
    bv, sv = _view(big, key, flat_key, c_big), _view(small, key, flat_key, c_small)
    bv[_slices(sv.shape)] = sv
    return big


def _extract(big, small_shape, key: str, flat_key: str | None, c_small: int, c_big: int):
    bv = _view(big, key, flat_key, c_big)
    if flat_key is not None and key == flat_key + "weight":
        return bv[: small_shape[0], :c_small, :].reshape(small_shape).clone()
    return bv[_slices(small_shape)].clone()


# --- the group loop --------------------------------------------------------------------------


def _draw_shifts(shifts: list[int], gens: list, b: int) -> torch.Tensor:
    """One step's shift offsets (N, 2, b) on the CPU: member i's from its own generator, as `_shift` draws them
    (none where its shift is 0), moved by max(shifts) - shifts[i] to index the image padded by the largest shift."""
    import torch

    s_max = max(shifts)
    d = torch.full((len(shifts), 2, b), s_max, dtype=torch.long)
    for i, s in enumerate(shifts):
        if s:
            d[i] = torch.randint(0, 2 * s + 1, (2, b), generator=gens[i]) + (s_max - s)
    return d


def _apply_shifts(xb, d, s_max: int) -> torch.Tensor:
    """Shift xb (N, B, C, H, W) by offsets d (N, 2, B) into the zero-padded image; same result as `_shift`."""
    import torch
    import torch.nn.functional as F

    n, b, c, h, w = xb.shape
    flat = xb.reshape(n * b, c, h, w)
    padded = F.pad(flat, (s_max,) * 4)
    dy = d[:, 0].reshape(-1)
    dx = d[:, 1].reshape(-1)
    rows = (torch.arange(h, device=xb.device)[None, :] + dy[:, None])[:, :, None]
    cols = (torch.arange(w, device=xb.device)[None, :] + dx[:, None])[:, None, :]
    bi = torch.arange(n * b, device=xb.device)[:, None, None]
    out = padded[bi, :, rows, cols].permute(0, 3, 1, 2).contiguous()
    return out.reshape(n, b, c, h, w)


def _fake_quant(w, m, hi, one_bit, en, per_channel: bool, symmetric: bool):
    """`mincap.quant`'s FakeQuant for one member's weight `w` (mask `m`), vmap-friendly.

    `hi` (largest code), `one_bit` and `en` (enabled) are 0-dim tensors, so members may
    differ in bit width and in whether fake quantization is on. Padded entries quantize
    to 0; a 1-bit scale is the mean |w| over the member's own entries.
    """
    import torch

    tiny = torch.finfo(torch.float32).tiny
    wd = w.detach()
    flat = wd.reshape(wd.shape[0], -1) if per_channel else wd.reshape(1, -1)
    mflat = m.reshape(flat.shape)
    if symmetric:
        s_many = flat.abs().amax(dim=1) / hi
        s_one = (flat.abs() * mflat).sum(dim=1) / mflat.sum(dim=1).clamp_min(1.0)
        scale = torch.where(one_bit, s_one, s_many).clamp_min(tiny * 1e6)
        codes = torch.round(flat / scale[:, None])
        codes = torch.where(one_bit, torch.where(flat >= 0, 1.0, -1.0), codes)
        codes = torch.clamp(codes, -hi, hi)
        wq = codes * scale[:, None]
    else:
        wmin = flat.amin(dim=1).clamp(max=0.0)
        wmax = flat.amax(dim=1).clamp(min=0.0)
        scale = ((wmax - wmin) / hi).clamp_min(tiny * 1e6)
        zp = torch.clamp(torch.round(-wmin / scale), torch.zeros_like(hi), hi)
        codes = torch.clamp(torch.round(flat / scale[:, None]) + zp[:, None], torch.zeros_like(hi), hi)
        wq = (codes - zp[:, None]) * scale[:, None]
    wq = wq.reshape(w.shape) * m
    return torch.where(en, w + (wq - w).detach(), w)


def _program(base) -> list[tuple]:
    """The layers of a built mincap network as (kind, state-dict prefix, argument) in forward order."""
    import torch.nn as nn

    prog: list[tuple] = []
    for part in ("features", "classifier"):
        for name, mod in getattr(base, part).named_children():
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


def _grouped_forward(prog: list[tuple], p: dict, b: dict, x, n: int, training: bool):
    """Logits (N, B, classes) of N members from x (B, N*C, H, W): member i's images in channels [i*C, (i+1)*C).

    Convolutions are grouped convolutions (groups=N), batch norm runs on N*C channels (each
    channel's statistics come from its own member's batch only), linear layers are batched
    matmuls on (N, B, features); the stacked running statistics are updated in place.
    """
    import torch
    import torch.nn.functional as F

    layout = "bchw"
    for kind, key, arg in prog:
        if kind in ("flatten", "gap") and layout == "bchw":
            if kind == "gap":
                x = F.adaptive_avg_pool2d(x, 1)
            bsz = x.shape[0]
            x = x.reshape(bsz, n, -1).transpose(0, 1)  # (N, B, F)
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


@dataclass
class _Member:
    index: int
    spec: Spec
    cfg: TrainConfig
    gen: object
    factor: Callable[[int], float]
    quant: tuple | None = None  # (QuantSpec | None per conv/linear layer, first fake-quant epoch)
    result: TrainResult = field(default_factory=TrainResult)


def _train_group(
    members: list[_Member],
    splits: Splits,
    device,
    on_epoch: Callable[[int, EpochStats], bool | None] | None,
    out: dict[int, Trained],
    engine: str = "grouped",
) -> None:
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, vmap

    from mincap.models import build, prepare
    from mincap.train import init_model

    big_spec = max_spec([m.spec for m in members])
    flat_key = _flatten_linear_key(big_spec)
    c_big_last = big_spec.convs[-1].channels if big_spec.convs else 0
    base = build(big_spec).to(device)
    big_state = {k: v for k, v in base.state_dict().items()}
    param_names = [k for k, _ in base.named_parameters()]
    buffer_names = [k for k, _ in base.named_buffers()]

    # Each member's own initial weights (the solo run's), embedded in the max-width shapes.
    small_shapes: list[dict[str, torch.Size]] = []
    stacks: dict[str, list] = {k: [] for k in big_state}
    masks: dict[str, list] = {k: [] for k in param_names}
    for m in members:
        sd = init_model(m.spec, m.cfg.seed, device).state_dict()
        small_shapes.append({k: v.shape for k, v in sd.items()})
        c_small = m.spec.convs[-1].channels if m.spec.convs else 0
        for k, v in sd.items():
            fill = 1.0 if k.endswith("running_var") else 0.0
            stacks[k].append(_embed(v, big_state[k].shape, k, flat_key, c_small, c_big_last, fill))
            if k in masks:
                masks[k].append(_embed(torch.ones_like(v), big_state[k].shape, k, flat_key, c_small, c_big_last))
    params = {k: torch.stack(stacks[k]).requires_grad_(True) for k in param_names}
    buffers = {k: torch.stack(stacks[k]) for k in buffer_names}
    mask = {k: torch.stack(masks[k]) for k in param_names}
    full = {k: bool(mask[k].all()) for k in param_names}  # nothing padded: skip masking
    exp_avg = {k: torch.zeros_like(p) for k, p in params.items()}
    exp_avg_sq = {k: torch.zeros_like(p) for k, p in params.items()}
    # Fake quantization (QAT): per member and conv/linear layer, largest code, 1-bit flag, on/off.
    import torch.nn as nn

    qkeys = [f"{name}.weight" for name, mod in base.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    qflags: list[tuple[bool, bool]] = []
    use_quant = any(m.quant is not None for m in members)
    if use_quant:
        for li in range(len(qkeys)):
            flags = {(q.per_channel, q.symmetric) for m in members if m.quant is not None
                     for q in [m.quant[0][li]] if q is not None}
            if len(flags) > 1:
                raise MincapError("train_many: one group's quantizers must share per_channel and symmetric per layer")
            qflags.append(flags.pop() if flags else (True, True))

    def _qrow(m: _Member):
        specs = m.quant[0] if m.quant is not None else [None] * len(qkeys)
        if len(specs) != len(qkeys):
            raise MincapError(f"quant: {len(specs)} bit widths for {len(qkeys)} conv/linear layers")
        his = [1.0 if q is None or q.bits == 1 else float((2 ** (q.bits - 1) - 1) if q.symmetric else 2**q.bits - 1)
               for q in specs]
        return his, [q is not None and q.bits == 1 for q in specs], [q is not None for q in specs]

    rows = [_qrow(m) for m in members]
    q_hi = torch.tensor([r[0] for r in rows], device=device)
    q_one = torch.tensor([r[1] for r in rows], device=device)
    q_has = torch.tensor([r[2] for r in rows], device=device)
    prog = _program(base)
    base = base.to("meta")  # structure only; the tensors come from the stacks

    def quantized(p, mk, hi, one, en):
        if not use_quant:
            return p
        p = dict(p)
        for li, k in enumerate(qkeys):
            p[k] = _fake_quant(p[k], mk[k], hi[li], one[li], en[li], *qflags[li])
        return p

    vq = vmap(_fake_quant, in_dims=(0, 0, 0, 0, 0, None, None))

    def grouped_logits(p, b, x, mk, hi, one, en, training):
        if use_quant:
            p = dict(p)
            for li, k in enumerate(qkeys):
                p[k] = vq(p[k], mk[k], hi[:, li], one[:, li], en[:, li], *qflags[li])
        return _grouped_forward(prog, p, b, x, hi.shape[0], training)

    def loss_fn(p, b, x, y, mk, hi, one, en, ls):
        return F.cross_entropy(functional_call(base, (quantized(p, mk, hi, one, en), b), (x,)), y, label_smoothing=ls)

    def logits_fn(p, b, x, mk, hi, one, en):
        return functional_call(base, (quantized(p, mk, hi, one, en), b), (x,))

    randomness = "different" if big_spec.dropout else "error"
    x_all = prepare(splits.train.x.to(device))
    y_all = splits.train.y.to(device)
    n = len(y_all)
    cfg0 = members[0].cfg
    bs = min(cfg0.batch_size, n)
    steps = max(1, n // bs)
    ls = cfg0.label_smoothing
    step = 0
    epoch = 0
    t0 = time.perf_counter()

    def per_member(vec, like):
        return vec.reshape((-1,) + (1,) * (like.dim() - 1))

    # Every member's learning rate for every step, built once in double precision (torch's
    # AdamW computes with Python floats): per-step host-to-device copies would make the GPU
    # wait for the host at every step.
    longest = max(m.cfg.epochs for m in members)
    lr_table = torch.tensor([[m.cfg.lr * m.factor(t) for t in range(m.cfg.epochs * steps)]
                             + [0.0] * ((longest - m.cfg.epochs) * steps)
                             for m in members], dtype=torch.float64, device=device)
    wd = torch.tensor([m.cfg.weight_decay for m in members], dtype=torch.float64, device=device)

    while members:
        te = time.perf_counter()
        base.train()
        batched_loss = vmap(loss_fn, in_dims=(0, 0, 0, 0, 0, 0, 0, 0, None), randomness=randomness)
        # Fake quantization on from each member's switch epoch (`mincap.compress`'s on_epoch_start).
        switch = torch.tensor([m.quant[1] if m.quant is not None else epoch + 1 for m in members], device=device)
        q_en = q_has & (epoch >= switch)[:, None]
        perms = torch.stack([torch.randperm(n, generator=m.gen) for m in members]).to(device)
        shifts = [m.cfg.augment_shift for m in members]
        gens = [m.gen for m in members]
        if max(shifts):  # the epoch's offsets drawn up front (same draws, same order), one copy to the device
            offsets = torch.stack([_draw_shifts(shifts, gens, bs) for _ in range(steps)]).to(device)
        loss_sum = torch.zeros(len(members), device=device)
        for i in range(steps):
            idx = perms[:, i * bs : (i + 1) * bs]  # (N, B)
            xb = x_all[idx]
            if max(shifts):
                xb = _apply_shifts(xb, offsets[i], max(shifts))
            for k in params:
                params[k].grad = None
            if engine == "vmap":
                losses = batched_loss(params, buffers, xb, y_all[idx], mask, q_hi, q_one, q_en, ls)
            else:
                nm, bsz = xb.shape[:2]
                xg = xb.transpose(0, 1).reshape(bsz, nm * xb.shape[2], *xb.shape[3:])
                logits = grouped_logits(params, buffers, xg, mask, q_hi, q_one, q_en, True)
                losses = F.cross_entropy(logits.reshape(nm * bsz, -1), y_all[idx].reshape(-1), reduction="none",
                                         label_smoothing=ls).reshape(nm, bsz).mean(1)
            losses.sum().backward()
            # AdamW (decoupled weight decay), torch's single-tensor formula with per-member lr and decay.
            step += 1
            lr = lr_table[:, step - 1]
            bc1 = 1 - BETA1**step
            bc2_sqrt = (1 - BETA2**step) ** 0.5
            # Per-member scalars are computed in double like torch's Python floats, then cast to float32.
            decay = (1 - lr * wd).float()
            step_size = (lr / bc1).float()
            with torch.no_grad():
                for k, p in params.items():
                    g = p.grad if full[k] else p.grad * mask[k]
                    p.mul_(per_member(decay, p))
                    exp_avg[k].lerp_(g, 1 - BETA1)
                    exp_avg_sq[k].mul_(BETA2).addcmul_(g, g, value=1 - BETA2)
                    denom = (exp_avg_sq[k].sqrt() / bc2_sqrt).add_(EPS)
                    p.sub_(per_member(step_size, p) * (exp_avg[k] / denom))
            loss_sum += losses.detach()
        mean_loss = (loss_sum / steps).tolist()
        epoch += 1

        # Validation: every member on the same images, its own running statistics.
        base.eval()
        batched_logits = vmap(logits_fn, in_dims=(0, 0, None, 0, 0, 0, 0), randomness=randomness)
        preds = []
        with torch.no_grad():
            chunk = max(1, cfg0.eval_batch_size // len(members))  # the activations of N members at once
            for j in range(0, len(splits.val), chunk):
                xv = prepare(splits.val.x[j : j + chunk].to(device))
                if engine == "vmap":
                    logits = batched_logits(params, buffers, xv, mask, q_hi, q_one, q_en)
                else:
                    xg = xv.repeat(1, len(members), 1, 1)
                    logits = grouped_logits(params, buffers, xg, mask, q_hi, q_one, q_en, False)
                preds.append(logits.argmax(-1).cpu())
        yv = splits.val.y.cpu()
        accs = [float((p == yv).float().mean()) for p in torch.cat(preds, dim=1)] if preds else [math.nan] * len(
            members
        )
        dt = time.perf_counter() - te

        keep: list[int] = []
        for j, m in enumerate(members):
            error = None
            done = False
            if not math.isfinite(mean_loss[j]):
                error = NonFiniteLoss(f"loss became {mean_loss[j]} in epoch {epoch}")
                done = True
            else:
                stats = EpochStats(epoch, mean_loss[j], accs[j], dt)
                m.result.history.append(stats)
                if on_epoch is not None and on_epoch(m.index, stats):
                    m.result.stopped_early = epoch < m.cfg.epochs
                    done = True
                done = done or epoch >= m.cfg.epochs
            if not done:
                keep.append(j)
                continue
            m.result.train_time_s = time.perf_counter() - t0
            model = init_model(m.spec, m.cfg.seed, device)
            c_small = m.spec.convs[-1].channels if m.spec.convs else 0
            sd = {}
            for k, shape in small_shapes[j].items():
                src = params[k].detach()[j] if k in params else buffers[k][j]
                sd[k] = _extract(src, shape, k, flat_key, c_small, c_big_last)
            model.load_state_dict(sd)
            out[m.index] = Trained(model, m.result, error)
        if len(keep) < len(members):
            sel = torch.tensor(keep, dtype=torch.long, device=device)
            members = [members[j] for j in keep]
            small_shapes = [small_shapes[j] for j in keep]
            params = {k: p.detach().index_select(0, sel).requires_grad_(True) for k, p in params.items()}
            buffers = {k: b.index_select(0, sel) for k, b in buffers.items()}
            mask = {k: v.index_select(0, sel) for k, v in mask.items()}
            q_hi, q_one, q_has = q_hi[sel], q_one[sel], q_has[sel]
            lr_table, wd = lr_table.index_select(0, sel), wd.index_select(0, sel)
            exp_avg = {k: v.index_select(0, sel) for k, v in exp_avg.items()}
            exp_avg_sq = {k: v.index_select(0, sel) for k, v in exp_avg_sq.items()}


def train_many(
    specs: Sequence[Spec],
    splits: Splits,
    cfgs: Sequence[TrainConfig],
    *,
    device: str | torch.device | None = None,
    on_epoch: Callable[[int, EpochStats], bool | None] | None = None,
    max_group: int = 0,
    max_waste: float = 0.0,
    quant: Sequence[tuple | None] | None = None,
    engine: str = "grouped",
) -> list[Trained]:
    """Train trial i = (specs[i], cfgs[i]) for each i, batched by `group_trials`; results in input order.

    `on_epoch(i, stats)` is called after each of trial i's epochs; returning True stops
    trial i (its result's `stopped_early` is set), like `train`'s `on_epoch`. A trial
    whose loss becomes non-finite ends with `Trained.error` set instead of raising, so
    the other members go on.

    `quant[i]` (optional) is `(QuantSpec | None per conv/linear layer, switch)`: trial i
    trains with `mincap.quant`'s fake quantization from epoch index `switch` on, as the
    first phase of `mincap.compress.train_compressed` does (`qat_plan` builds it from a
    `CompressConfig`). The returned module then holds the latent float weights, without
    parametrizations; attach the fake quantizers again to continue.
    """
    import torch

    if len(specs) != len(cfgs):
        raise MincapError(f"train_many: {len(specs)} specs but {len(cfgs)} configs")
    device = torch.device(device or "cpu")
    if engine not in ("grouped", "vmap"):
        raise MincapError(f"train_many: engine must be 'grouped' or 'vmap', got {engine!r}")
    if quant is not None and len(quant) != len(specs):
        raise MincapError(f"train_many: {len(specs)} specs but {len(quant)} quant plans")
    out: dict[int, Trained] = {}
    groups = group_trials(specs, cfgs, max_group=max_group, max_waste=max_waste)
    if quant is not None:  # quantizer kinds (per-channel, symmetric) must agree inside a group
        def kinds(i: int) -> tuple:
            return tuple((q.per_channel, q.symmetric) for q in quant[i][0] if q is not None) if quant[i] else ()

        split: list[list[int]] = []
        for g in groups:
            by: dict[tuple, list[int]] = {}
            for i in g:
                by.setdefault(kinds(i), []).append(i)
            split += list(by.values())
        groups = split
    for group in groups:
        members = [
            _Member(i, specs[i], cfgs[i], torch.Generator().manual_seed(cfgs[i].seed),
                    one_cycle(cfgs[i].epochs * max(1, len(splits.train.y) // min(cfgs[i].batch_size,
                                                                                 len(splits.train.y)))),
                    quant[i] if quant is not None else None)
            for i in group
        ]
        members = [m for m in members if m.cfg.epochs > 0 or _empty(m, device, out)]
        if members:
            _train_group(members, splits, device, on_epoch, out, engine)
    return [out[i] for i in range(len(specs))]


def qat_plan(spec: Spec, cfg: TrainConfig, comp) -> tuple:
    """`train_many`'s `quant` entry for a trial that `train_compressed(spec, ..., cfg, comp)` would train."""
    from mincap import quant
    from mincap.models import build

    bits = comp.layer_bits(len(quant.quant_layers(build(spec))))
    qspecs = [None if b is None else quant.QuantSpec(b, comp.per_channel, comp.symmetric) for b in bits]
    return qspecs, cfg.epochs - comp.qat_epochs


def _empty(m: _Member, device, out: dict[int, Trained]) -> bool:
    """A zero-epoch trial: its initial weights, no history (what `train` returns)."""
    from mincap.train import init_model

    out[m.index] = Trained(init_model(m.spec, m.cfg.seed, device), m.result)
    return False
