"""Train many small networks at once: one batched computation per group of like-shaped trials.

`train_many(specs, splits, cfgs)` trains N networks and returns, for each, an ordinary
`nn.Module` holding its trained weights and a `TrainResult` -- what `mincap.training.engine.train`
would have given that trial alone, within floating-point noise (see "Equivalence").

Grouping (`group_key`)
    Trials go into one group when their networks share a layer structure
    (`Spec.structure()`: family, conv blocks with their kernel/stride/pool/pad, number of
    hidden layers, activation, batch norm, head, dropout, input shape and classes), the
    same batch size, label smoothing and evaluation batch size (the step count per epoch
    and the loss must agree), and, with QAT, the same quantizer kinds (per-channel,
    symmetric) per layer. Widths (conv channels, hidden units), learning rate, weight
    decay, augmentation shift, seed, epochs and bit widths may all differ inside a group.

Batched computation (`mincap.training.grouped`)
    A group runs as one network of the group's largest width per layer, each member's
    weights masked into the leading slice of every tensor; convolutions are grouped
    convolutions over the N members, linear layers batched matmuls, and every member
    keeps its own AdamW state, learning rate (one-cycle factor of its own epochs) and
    weight decay. The data stay on the device as one tensor; each member draws its own
    `randperm` order and `_shift` offsets from its own
    `torch.Generator().manual_seed(cfg.seed)` in the same order as `train` does, and the N
    batches are gathered and shifted in one indexing operation each. Members with a warp
    (`mincap.training.augment`: affine / elastic) draw their grids from their own
    `augment.warp_generator(cfg.seed)`, as `train` does, and are resampled in one `grid_sample`.

Equivalence
    Weights start from `mincap.training.engine.init_model(spec, cfg.seed)`; batch order,
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
the remaining members go on with their stacks re-indexed. With `quant=` plans
(`mincap.compression.qat.qat_plan`), members train with `mincap.nets.quant`'s fake quantization
(per-member bit widths, 1-bit and asymmetric included) from their own switch epoch, i.e.
the whole first `train` call of `mincap.compression.qat.train_compressed`; pruning, fine-tuning,
export stay per trial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mincap.config import CompressConfig, TrainConfig
from mincap.data import Split, Splits
from mincap.errors import MincapError, NonFiniteLoss
from mincap.nets.models import Spec, prepare
from mincap.training.augment import Warp, resample, sampling_grid, warp_generator
from mincap.training.engine import EpochStats, TrainResult, init_model, one_cycle
from mincap.training.grouped import Stack, StackedAdamW

__all__ = ["Trained", "batch_refusal", "group_key", "group_trials", "train_many"]

OnEpoch = Callable[[int, EpochStats], bool | None]


@dataclass
class Trained:
    """One member's outcome: the trained module, its `TrainResult`, and the error that ended it (or None)."""

    model: torch.nn.Module
    result: TrainResult
    error: BaseException | None = None

    def __iter__(self):  # `model, result = trained`
        return iter((self.model, self.result))


def batch_refusal(spec: Spec, comp: CompressConfig) -> str | None:
    """Why a trial cannot train in a batched group (`train_many`), or None when it can.

    The grouped program stacks plain convolutions, has only the max-|w| fake quantizer, and
    trains with the plan's fixed widths (`qat_plan` carries no annealing schedule): a trial
    needing any other trains one at a time, else it would fail or train differently here.
    """
    if any(c.separable for c in spec.convs):
        return "depthwise-separable blocks"
    if comp.quantizer != "max":
        return f"the {comp.quantizer} quantizer"
    if comp.anneal_epochs > 0:
        return "bit annealing"
    return None


def group_key(spec: Spec, cfg: TrainConfig, plan: tuple | None = None) -> tuple:
    """Trials with equal keys can share one batched computation (widths, bits, lr, seeds... may differ).

    `plan` is the trial's `quant=` entry: quantizer kinds (per-channel, symmetric) must agree per layer.
    """
    # A set, not per layer: float layers (None) may sit anywhere; `grouped.QuantRows` checks per layer.
    kinds = tuple(sorted({(q.per_channel, q.symmetric) for q in plan[0] if q is not None})) if plan else ()
    return spec.structure(), cfg.batch_size, cfg.label_smoothing, cfg.eval_batch_size, kinds


def group_trials(specs: Sequence[Spec], cfgs: Sequence[TrainConfig],
                 quant: Sequence[tuple | None] | None = None) -> list[list[int]]:
    """Indices of trials grouped by `group_key`, in input order."""
    by_key: dict[tuple, list[int]] = {}
    for i, (s, c) in enumerate(zip(specs, cfgs)):
        by_key.setdefault(group_key(s, c, quant[i] if quant is not None else None), []).append(i)
    return list(by_key.values())


@dataclass
class _Member:
    index: int  # position in train_many's input
    spec: Spec
    cfg: TrainConfig
    gen: torch.Generator  # the solo run's batch-order and augmentation generator
    quant: tuple | None = None  # (QuantSpec | None per conv/linear layer, first fake-quant epoch)
    result: TrainResult = field(default_factory=TrainResult)
    warp: Warp = field(init=False)
    warp_gen: torch.Generator | None = field(init=False)  # the solo run's warp generator, or None

    def __post_init__(self) -> None:
        self.warp = Warp.from_config(self.cfg)
        self.warp_gen = warp_generator(self.cfg.seed) if self.warp.active else None


def train_many(
    specs: Sequence[Spec],
    splits: Splits,
    cfgs: Sequence[TrainConfig],
    *,
    device: str | torch.device | None = None,
    on_epoch: OnEpoch | None = None,
    quant: Sequence[tuple | None] | None = None,
) -> list[Trained]:
    """Train trial i = (specs[i], cfgs[i]) for each i, batched by `group_trials`; results in input order.

    `on_epoch(i, stats)` is called after each of trial i's epochs; returning True stops
    trial i (its result's `stopped_early` is set), like `train`'s `on_epoch`. A trial
    whose loss becomes non-finite ends with `Trained.error` set instead of raising, so
    the other members go on.

    `quant[i]` (optional) is `(QuantSpec | None per conv/linear layer, switch)`: trial i
    trains with `mincap.nets.quant`'s fake quantization from epoch index `switch` on, as the
    first phase of `mincap.compression.qat.train_compressed` does (`mincap.compression.qat.qat_plan`
    builds it). The returned module then holds the latent float weights, without
    parametrizations; attach the fake quantizers again to continue.
    """
    if any(c.separable for s in specs for c in s.convs):
        # The grouped program stacks plain convolutions only (groups=N over members).
        raise MincapError("train_many: depthwise-separable conv blocks train one trial at a time (--batch-trials 1)")
    if len(specs) != len(cfgs):
        raise MincapError(f"train_many: {len(specs)} specs but {len(cfgs)} configs")
    if quant is not None and len(quant) != len(specs):
        raise MincapError(f"train_many: {len(specs)} specs but {len(quant)} quant plans")
    device = torch.device(device or "cpu")
    out: dict[int, Trained] = {}
    for group in group_trials(specs, cfgs, quant):
        members = []
        for i in group:
            m = _Member(i, specs[i], cfgs[i], torch.Generator().manual_seed(cfgs[i].seed),
                        quant[i] if quant is not None else None)
            if m.cfg.epochs > 0:
                members.append(m)
            else:  # what `train` returns for zero epochs: the initial weights, no history
                out[i] = Trained(init_model(m.spec, m.cfg.seed, device), m.result)
        if members:
            _train_group(members, splits, device, on_epoch, out)
    return [out[i] for i in range(len(specs))]


def _train_group(members: list[_Member], splits: Splits, device: torch.device, on_epoch: OnEpoch | None,
                 out: dict[int, Trained]) -> None:
    """Train one group until every member has left it; each leaving member's `Trained` goes into `out`."""
    x_all = prepare(splits.train.x.to(device))
    y_all = splits.train.y.to(device)
    bs = min(members[0].cfg.batch_size, len(y_all))
    steps = max(1, len(y_all) // bs)  # drop the ragged last batch, as `train` does
    stack = Stack.build([m.spec for m in members], [m.cfg.seed for m in members], [m.quant for m in members],
                        device)
    opt = StackedAdamW(stack, _lr_table(members, steps, device),
                       torch.tensor([m.cfg.weight_decay for m in members], dtype=torch.float64, device=device))
    t0 = time.perf_counter()
    epoch = 0
    while members:
        te = time.perf_counter()
        loss_sum = _train_epoch(stack, opt, members, x_all, y_all, bs, steps, epoch)
        accs = _validate(stack, splits.val, members[0].cfg.eval_batch_size, epoch)
        epoch += 1
        dt = time.perf_counter() - te
        done = _record_epoch(members, epoch, (loss_sum / steps).tolist(), accs, dt, on_epoch)
        if done:
            members = _leave(members, done, stack, opt, out, time.perf_counter() - t0)


def _lr_table(members: list[_Member], steps: int, device: torch.device) -> torch.Tensor:
    """Every member's learning rate at every step (N, longest run's steps), in double; 0 after its own end."""
    longest = max(m.cfg.epochs for m in members)
    rows = []
    for m in members:
        factor = one_cycle(m.cfg.epochs * steps)
        rows.append([m.cfg.lr * factor(t) for t in range(m.cfg.epochs * steps)]
                    + [0.0] * ((longest - m.cfg.epochs) * steps))
    return torch.tensor(rows, dtype=torch.float64, device=device)


def _train_epoch(stack: Stack, opt: StackedAdamW, members: list[_Member], x_all: torch.Tensor,
                 y_all: torch.Tensor, bs: int, steps: int, epoch: int) -> torch.Tensor:
    """One epoch of every member (epoch index `epoch`); returns the members' summed step losses (N,)."""
    device = x_all.device
    perms = torch.stack([torch.randperm(len(y_all), generator=m.gen) for m in members]).to(device)
    shifts = [m.cfg.augment_shift for m in members]
    if max(shifts):  # the epoch's offsets drawn up front (same draws, same order), one copy to the device
        offsets = torch.stack([_draw_shifts(shifts, [m.gen for m in members], bs) for _ in range(steps)]).to(device)
    warped = [j for j, m in enumerate(members) if m.warp_gen is not None]
    ls = members[0].cfg.label_smoothing
    loss_sum = torch.zeros(len(members), device=device)
    for i in range(steps):
        idx = perms[:, i * bs : (i + 1) * bs]  # (N, B)
        xb = x_all[idx]  # (N, B, C, H, W)
        if max(shifts):
            xb = _apply_shifts(xb, offsets[i], max(shifts))
        if warped:
            xb = _apply_warps(xb, members, warped)
        n, b = xb.shape[:2]
        logits = stack.logits(xb.transpose(0, 1).reshape(b, n * xb.shape[2], *xb.shape[3:]), epoch, True)
        losses = F.cross_entropy(logits.reshape(n * b, -1), y_all[idx].reshape(-1), reduction="none",
                                 label_smoothing=ls).reshape(n, b).mean(1)
        for p in stack.params.values():
            p.grad = None
        losses.sum().backward()
        opt.step()
        loss_sum += losses.detach()
    return loss_sum


def _draw_shifts(shifts: list[int], gens: list[torch.Generator], b: int) -> torch.Tensor:
    """One step's shift offsets (N, 2, b) on the CPU: member i's from its own generator, as `_shift` draws them
    (none where its shift is 0), moved by max(shifts) - shifts[i] to index the image padded by the largest shift."""
    s_max = max(shifts)
    d = torch.full((len(shifts), 2, b), s_max, dtype=torch.long)
    for i, s in enumerate(shifts):
        if s:
            d[i] = torch.randint(0, 2 * s + 1, (2, b), generator=gens[i]) + (s_max - s)
    return d


def _apply_shifts(xb: torch.Tensor, d: torch.Tensor, s_max: int) -> torch.Tensor:
    """Shift xb (N, B, C, H, W) by offsets d (N, 2, B) into the zero-padded image; same result as `_shift`."""
    n, b, c, h, w = xb.shape
    padded = F.pad(xb.reshape(n * b, c, h, w), (s_max,) * 4)
    dy = d[:, 0].reshape(-1)
    dx = d[:, 1].reshape(-1)
    rows = (torch.arange(h, device=xb.device)[None, :] + dy[:, None])[:, :, None]
    cols = (torch.arange(w, device=xb.device)[None, :] + dx[:, None])[:, None, :]
    bi = torch.arange(n * b, device=xb.device)[:, None, None]
    out = padded[bi, :, rows, cols].permute(0, 3, 1, 2).contiguous()
    return out.reshape(n, b, c, h, w)


def _apply_warps(xb: torch.Tensor, members: list[_Member], warped: list[int]) -> torch.Tensor:
    """Warp members `warped` of xb (N, B, C, H, W), each by a grid from its own generator (the draws
    of its solo run), all in one `grid_sample`; the other members' images are left as they are."""
    n, b, c, h, w = xb.shape
    k = len(warped)
    grids = torch.cat([sampling_grid(members[j].warp, b, h, w, members[j].warp_gen, xb.device,
                                     xb.dtype) for j in warped])
    if k == n:
        return resample(xb.reshape(n * b, c, h, w), grids).reshape(n, b, c, h, w)
    sel = torch.tensor(warped, device=xb.device)
    out = xb.clone()
    out[sel] = resample(xb[sel].reshape(k * b, c, h, w), grids).reshape(k, b, c, h, w)
    return out


def _validate(stack: Stack, val: Split, eval_batch_size: int, epoch: int) -> list[float]:
    """Every member's accuracy on the same validation images, with its own running statistics.

    `epoch` is the index of the epoch just trained: fake quantization is on as it was in it.
    """
    device = stack.device
    n = len(stack)
    chunk = max(1, eval_batch_size // n)  # the activations of N members at once
    preds = []
    with torch.no_grad():
        for j in range(0, len(val), chunk):
            xv = prepare(val.x[j : j + chunk].to(device))
            preds.append(stack.logits(xv.repeat(1, n, 1, 1), epoch, False).argmax(-1).cpu())
    if not preds:
        return [math.nan] * n
    yv = val.y.cpu()
    return [float((p == yv).float().mean()) for p in torch.cat(preds, dim=1)]


def _record_epoch(members: list[_Member], epoch: int, mean_loss: list[float], accs: list[float], dt: float,
                  on_epoch: OnEpoch | None) -> dict[int, BaseException | None]:
    """Append each member's `EpochStats` and call `on_epoch`; returns {index: error or None} of the members done
    (their epochs run out, early-stopped, or a non-finite loss)."""
    done: dict[int, BaseException | None] = {}
    for m, loss, acc in zip(members, mean_loss, accs):
        if not math.isfinite(loss):
            done[m.index] = NonFiniteLoss(f"loss became {loss} in epoch {epoch}")
            continue
        stats = EpochStats(epoch, loss, acc, dt)
        m.result.history.append(stats)
        if on_epoch is not None and on_epoch(m.index, stats):
            m.result.stopped_early = epoch < m.cfg.epochs
            done[m.index] = None
        elif epoch >= m.cfg.epochs:
            done[m.index] = None
    return done


def _leave(members: list[_Member], done: dict[int, BaseException | None], stack: Stack, opt: StackedAdamW,
           out: dict[int, Trained], train_time_s: float) -> list[_Member]:
    """Hand each finished member's own network to `out`; re-index the stacks to the others, returned."""
    keep: list[int] = []
    for j, m in enumerate(members):
        if m.index not in done:
            keep.append(j)
            continue
        m.result.train_time_s = train_time_s
        model = init_model(m.spec, m.cfg.seed, stack.device)
        model.load_state_dict(stack.member_state(j))
        out[m.index] = Trained(model, m.result, done[m.index])
    if keep:
        opt.select(stack.select(keep))
    return [members[j] for j in keep]
