"""The training engine: whole-tensor data, `randperm` batches, AdamW with a one-cycle schedule.

airbench's idioms, sized for tiny MNIST networks: the train split is converted
to float once and kept on the device as one tensor; each step indexes a batch
out of it with a seeded `randperm` (no DataLoader, no per-sample transforms);
augmentation is a per-sample random shift done as one gather on the batch,
optionally followed by a random affine map and elastic distortion resampled in one
`grid_sample` (`mincap.training.augment`; off by default);
batches are large and the learning rate follows a one-cycle schedule. On the
2-core CPU machine this trains the `tiny` preset (~2.7k parameters) on 55,000
images at about the speed `bench/train_speed.py` prints, many times the
pytorch/examples DataLoader loop.

Training is deterministic on CPU for a given seed (the model's initial weights
come from `torch.manual_seed(seed)` in `init_model`, batch order and shifts from a
generator seeded by the same seed, warps from `augment.warp_generator(seed)`).
The per-epoch callback receives the validation accuracy; returning True stops
training (the search's early-stop rule and Optuna hook in there). The test set
is never read here: `evaluate` scores whatever split it is given, and only
`mincap.evaluation.holdout` hands out the test split.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mincap.config import TrainConfig
from mincap.data import Split, Splits
from mincap.errors import MincapError, NonFiniteLoss
from mincap.nets.models import Spec, build, prepare
from mincap.training.augment import Warp, augment, warp_generator

__all__ = [
    "EpochStats",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "init_model",
    "pick_device",
    "setup_threads",
    "train",
]


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val_acc: float
    time_s: float


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    train_time_s: float = 0.0
    stopped_early: bool = False

    @property
    def val_acc(self) -> float:
        return self.history[-1].val_acc if self.history else float("nan")


_threads_set = False


def available_cores() -> int:
    """The cores this process may run on (taskset / cgroup pinning), not the machine's count:
    two pinned processes must not each start one thread per core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def setup_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads once per process (default: all available cores).

    Deliberate, because the best setting differs between one training per
    process (all cores) and several worker processes (one each).
    """
    global _threads_set
    n = n or int(os.environ.get("MINCAP_THREADS", 0)) or available_cores()
    if not _threads_set or torch.get_num_threads() != n:
        torch.set_num_threads(n)
        _threads_set = True
    return n


def pick_device(name: str = "auto") -> torch.device:
    """`auto` = cuda when present, else cpu; a named device that this machine lacks is a one-line error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MincapError(f"--device {name}: not a device name (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MincapError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise MincapError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def init_model(spec: Spec, seed: int, device: str | torch.device = "cpu"):
    """Build `spec` with weights drawn from `seed` (the one place initial weights are seeded)."""
    torch.manual_seed(seed)
    return build(spec).to(device)


def one_cycle(total_steps: int, warmup: float = 0.25, start: float = 0.04, end: float = 1e-3):
    """Learning-rate factor per step: linear warm-up from `start` to 1, then linear decay to `end`.

    Written out rather than `OneCycleLR`, which divides by zero when a short run has
    fewer than ~5 steps (tiny slices in tests and early trials).
    """
    w = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < w:
            return start + (1.0 - start) * step / w
        return end + (1.0 - end) * max(0.0, (total_steps - step) / max(1, total_steps - w))

    return factor


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-s, s], zero fill, as one gather."""
    b, _, h, w = x.shape
    s = max_shift
    d = torch.randint(0, 2 * s + 1, (2, b), generator=gen).to(x.device)
    padded = F.pad(x, (s, s, s, s))
    rows = (torch.arange(h, device=x.device)[None, :] + d[0][:, None])[:, :, None]  # (b, h, 1)
    cols = (torch.arange(w, device=x.device)[None, :] + d[1][:, None])[:, None, :]  # (b, 1, w)
    bi = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices around a slice put the broadcast (b, h, w) dims first: (b, h, w, C).
    # Copy to standard strides: with C == 1 the permuted tensor already counts as contiguous,
    # and its channels-last strides would send training down CPU kernels that are ~100x less
    # precise (gradients 1e-4 from float64 instead of 2e-6).
    return padded[bi, :, rows, cols].permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)


def train(
    model: torch.nn.Module,
    splits: Splits,
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[EpochStats], bool | None] | None = None,
    on_epoch_start: Callable[[int, torch.nn.Module], None] | None = None,
    teacher: torch.nn.Module | None = None,
) -> TrainResult:
    """Train `model` in place on `splits.train`, evaluating on `splits.val` after each epoch.

    With a `teacher` and `cfg.distill_weight` w > 0 the loss is
    (1 - w) * cross-entropy + w * T^2 * KL(teacher || student) at temperature T
    (Hinton et al. 2015); the teacher runs on the same augmented batch (a shifted image
    has the teacher's logits of the shifted image, which precomputed ones would not).
    Raises `NonFiniteLoss` when the loss becomes NaN or inf.
    """
    device = next(model.parameters()).device
    x = prepare(splits.train.x.to(device))
    y = splits.train.y.to(device)
    n = len(y)
    bs = min(cfg.batch_size, n)
    steps = max(1, n // bs)  # drop the ragged last batch: every step has the same size
    gen = torch.Generator().manual_seed(cfg.seed)
    warp = Warp.from_config(cfg)
    warp_gen = warp_generator(cfg.seed) if warp.active else None  # off: not one extra draw
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle(cfg.epochs * steps))
    result = TrainResult()
    distill = teacher is not None and cfg.distill_weight > 0
    temp = cfg.distill_temperature
    if distill:
        teacher.eval()
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch, model)
        model.train()
        te = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        for i in range(steps):
            idx = perm[i * bs : (i + 1) * bs]
            xb = x[idx]
            if cfg.augment_shift:
                xb = _shift(xb, cfg.augment_shift, gen)
            if warp_gen is not None:
                xb = augment(xb, warp, warp_gen)
            logits = model(xb)
            loss = F.cross_entropy(logits, y[idx], label_smoothing=cfg.label_smoothing)
            if distill:
                with torch.no_grad():
                    soft = F.log_softmax(teacher(xb) / temp, dim=1)
                kl = F.kl_div(F.log_softmax(logits / temp, dim=1), soft, log_target=True, reduction="batchmean")
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * temp * temp * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
        mean_loss = float(loss_sum) / steps  # one sync per epoch, not per step
        if not math.isfinite(mean_loss):
            raise NonFiniteLoss(f"loss became {mean_loss} in epoch {epoch + 1}")
        val_acc, _ = evaluate(model, splits.val, batch_size=cfg.eval_batch_size)
        stats = EpochStats(epoch + 1, mean_loss, val_acc, time.perf_counter() - te)
        result.history.append(stats)
        if on_epoch is not None and on_epoch(stats):
            result.stopped_early = epoch + 1 < cfg.epochs
            break
    result.train_time_s = time.perf_counter() - t0
    return result


def evaluate(model: torch.nn.Module, split: Split, *, batch_size: int = 5000) -> tuple[float, torch.Tensor]:
    """Accuracy of `model` on `split` and its predicted labels (int64, on the CPU)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            xb = prepare(split.x[i : i + batch_size].to(device))
            preds.append(model(xb).argmax(1).cpu())
    model.train(was_training)
    p = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    acc = float((p == split.y.cpu()).float().mean()) if len(p) else float("nan")
    return acc, p
