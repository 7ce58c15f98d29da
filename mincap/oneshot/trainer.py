"""Training the supernet once: sandwich rule, in-place distillation, random bits; cached, resumable.

Each step (BigNAS, Yu et al. 2020) trains the largest sub-network on the labels, then the
smallest and `n_random` random ones on (1 - w) * cross-entropy + w * T^2 * KL to the largest's
soft labels of the same batch (in-place distillation), summing the gradients into one AdamW
step. The first epochs are float; the last `qat_fraction` are quantization-aware: the largest
at the space's widest bits, the smallest at its narrowest, the random ones at random bits per
layer. In the float epochs the channels are sorted by importance after every epoch
(`mincap.oneshot.supernet.sort_channels`, optimizer moments included).

The project's training idioms (`mincap.training.engine`): the train split as one float tensor
on the device, `randperm` batches with the ragged last batch dropped, per-sample random
shifts as one gather, AdamW with the one-cycle factor. Only `splits.train` is read.

Cache and checkpoints: one file under `<data-dir>/mincap-cache/supernet/` (else the per-user
cache, as the distillation teachers), named by a hash of the dataset, the split (n_val,
split_seed, limit, a fingerprint of the train labels), the space and the recipe. It is
rewritten atomically after every epoch (temporary file, then `os.replace`) with the weights,
the optimizer and schedule, and both random generators, so `kill -9` loses at most the epoch
in progress and the next call resumes where the file ends, drawing the same batches and
sub-networks an uninterrupted run would have drawn. A finished file is loaded, not retrained.
With a `deadline` (a `time.time()`, the search's `--timeout`) training stops at the first step
past it; the epoch in progress is dropped, as a kill would drop it, and `SupernetRun.stopped`
says so.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mincap.data import Splits
from mincap.errors import MincapError, NonFiniteLoss
from mincap.nets.models import prepare
from mincap.oneshot.space import SubnetConfig, SupernetSpace
from mincap.oneshot.supernet import Supernet, sort_channels
from mincap.training.distill import teacher_dirs
from mincap.training.engine import _shift, one_cycle

__all__ = ["FORMAT", "SupernetRecipe", "SupernetRun", "random_subnet", "supernet_dirs",
           "supernet_key", "supernet_name", "train_supernet"]

_now = time.time  # the deadline's clock (a test replaces it)
FORMAT = 1  # bump when the training or the file changes meaning: old files then miss the cache


@dataclass(frozen=True)
class SupernetRecipe:
    """How the supernet trains (part of its cache key)."""

    epochs: int = 40
    batch_size: int = 256
    # 4x the engine's default: on 11k train images, 8 float epochs, sep-1.8k one-shot 93.9% /
    # 95.4% / 96.2% / 96.2% at lr 0.01 / 0.02 / 0.04 / 0.08 (weight sharing: each step's update
    # is split among four sub-networks that disagree).
    lr: float = 0.04
    weight_decay: float = 1e-4
    augment_shift: int = 1
    qat_fraction: float = 0.3  # the last 30% of the epochs quantization-aware
    n_random: int = 2  # random sub-networks per step, besides the largest and the smallest
    # w: weight of the largest's soft labels in the children's loss (same runs, lr 0.04:
    # sep-1.8k 95.6% / 96.2% / 95.0% at w = 0 / 0.5 / 1)
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
    sort_channels: bool = True
    # The first epochs train the largest network alone (Once-for-All's first stage: a good
    # network, its channels sorted, before the sub-networks share it); 0: none. Measured (11k
    # train images, 8 float epochs): 2 such epochs, sep-1.8k one-shot 95.8% against 96.2%.
    largest_epochs: int = 0
    # Progressive shrinking (Once-for-All's schedule, by epoch): over the first `shrink_fraction`
    # of the sandwich epochs the children (the smallest and the random ones) are drawn from the top
    # of each elastic range only (`SupernetSpace.top`), the admitted share growing epoch by epoch
    # until the whole space is admitted, so the large sub-networks settle before the small ones
    # pull on their weights. 0: the whole space from the first sandwich epoch.
    shrink_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.n_random < 0:
            raise MincapError("oneshot recipe: epochs and batch_size must be >= 1, n_random >= 0")
        if not 0 <= self.largest_epochs < self.epochs:
            raise MincapError("oneshot recipe: largest_epochs must be in [0, epochs)")
        if not all(0.0 <= v <= 1.0 for v in (self.qat_fraction, self.distill_weight, self.shrink_fraction)):
            raise MincapError("oneshot recipe: qat_fraction, distill_weight and shrink_fraction must be "
                              "in [0, 1]")
        if self.distill_temperature <= 0 or self.lr <= 0:
            raise MincapError("oneshot recipe: distill_temperature and lr must be > 0")

    @property
    def qat_start(self) -> int:
        """The first quantization-aware epoch (0-based)."""
        return self.epochs - round(self.qat_fraction * self.epochs)

    def reach(self, epoch: int) -> float:
        """The share of the space admitted for the children in `epoch` (0-based): 1 without
        progressive shrinking and once it is over, else (k + 1) / (n + 1) in its k-th of n epochs."""
        n = round(self.shrink_fraction * (self.epochs - self.largest_epochs))
        k = epoch - self.largest_epochs
        return 1.0 if k >= n else (max(k, 0) + 1) / (n + 1)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SupernetRun:
    """A trained (or loaded) supernet and how it got here."""

    net: Supernet
    recipe: SupernetRecipe
    key: str
    cache_path: Path | None
    history: list[dict] = field(default_factory=list)  # one dict per epoch
    resumed_epoch: int = 0  # epochs found in the file when this call started
    train_time_s: float = 0.0  # all epochs, across resumes
    stopped: bool = False  # the deadline stopped the training before its last epoch

    @property
    def epochs_done(self) -> int:
        return len(self.history)


def supernet_dirs(root=None) -> list[Path]:
    """Cache folders, preferred first: beside the data, then the per-user cache (as for the
    distillation teachers)."""
    return [d.parent / "supernet" for d in teacher_dirs(root)]


def _train_fingerprint(splits: Splits) -> str:
    """The train labels' hash: a changed split changes it; the validation part is not read."""
    a = np.ascontiguousarray(splits.train.y.cpu().numpy())
    return hashlib.blake2b(f"{a.shape}".encode() + a.tobytes(), digest_size=8).hexdigest()


def supernet_name(splits: Splits, space: SupernetSpace, recipe: SupernetRecipe, *, n_val: int,
                  split_seed: int = 0, limit: int | None = None) -> str:
    """The cache file name of the supernet `train_supernet` trains on `splits` (its train labels'
    fingerprint included)."""
    space = space.with_data(splits.in_shape, splits.n_classes)
    return supernet_key(splits.name, space, recipe, n_val=n_val, split_seed=split_seed, limit=limit,
                        split_fp=_train_fingerprint(splits))


# The space's and the recipe's fields every key has hashed since FORMAT 1. A field added later
# enters the key only when it is set away from its default: a new setting whose default keeps the
# old behaviour keeps every cached supernet (the committed studies' included) valid. A change
# that alters what an old setting trains bumps FORMAT instead.
_KEYED_SPACE = frozenset({"widths0", "widths", "width_step", "depth", "bits", "kernel0", "kernel", "separable",
                          "pools", "padding", "per_channel", "step_per_width", "in_shape", "n_classes"})
_KEYED_RECIPE = frozenset({"epochs", "batch_size", "lr", "weight_decay", "augment_shift", "qat_fraction",
                           "n_random", "distill_weight", "distill_temperature", "sort_channels",
                           "largest_epochs", "seed"})


def _key_part(obj, keyed: frozenset) -> dict:
    """`obj.to_dict()` less the fields added after FORMAT 1 that are at their defaults."""
    defaults = {f.name: f.default for f in fields(obj) if f.default is not MISSING}
    return {k: v for k, v in obj.to_dict().items() if k in keyed or k not in defaults or v != defaults[k]}


def supernet_key(dataset: str, space: SupernetSpace, recipe: SupernetRecipe, *, n_val: int,
                 split_seed: int, limit: int | None = None, split_fp: str = "") -> str:
    """The cache file name of a supernet: dataset, split, space and recipe all in the hash."""
    blob = json.dumps({"format": FORMAT, "dataset": dataset, "n_val": n_val,
                       "split_seed": split_seed, "limit": limit, "split": split_fp,
                       "space": _key_part(space, _KEYED_SPACE), "recipe": _key_part(recipe, _KEYED_RECIPE)},
                      sort_keys=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)
    return f"{safe}-supernet-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"


def random_subnet(space: SupernetSpace, gen: torch.Generator, *, quantized: bool) -> SubnetConfig:
    """A uniformly random sub-network: depth, each block's width, each layer's bits (when
    quantized)."""

    def pick(choices):
        return choices[int(torch.randint(len(choices), (1,), generator=gen))]

    depth = pick(range(space.depth[0], space.depth[1] + 1))
    widths = tuple(pick(space.width_choices(i)) for i in range(depth))
    if not quantized:
        return SubnetConfig(widths)
    bits = tuple(pick(space.bit_choices()) for _ in range(space.n_layers(depth)))
    return SubnetConfig(widths, bits)


def _step(net: Supernet, xb, yb, opt, recipe: SupernetRecipe, gen: torch.Generator,
          quantized: bool, sandwich: bool = True, kids: SupernetSpace | None = None) -> torch.Tensor:
    """One sandwich step (the largest alone unless `sandwich`), the children drawn from `kids`
    (the space admitted this epoch; None: the whole space); returns the (largest, mean child)
    losses as a detached 2-vector (the children's 0 without the sandwich)."""
    sp, w, temp = net.space, recipe.distill_weight, recipe.distill_temperature
    kids = kids or sp
    opt.zero_grad(set_to_none=True)
    logits = net(xb, sp.largest(sp.bits[1] if quantized else None))
    loss = F.cross_entropy(logits, yb)
    loss.backward()
    soft = F.log_softmax(logits.detach() / temp, dim=1)
    children = []
    if sandwich:
        children = [kids.smallest(kids.bits[0] if quantized else None)]
        children += [random_subnet(kids, gen, quantized=quantized) for _ in range(recipe.n_random)]
    child_sum = torch.zeros((), device=xb.device)
    for cfg in children:
        out = net(xb, cfg)
        kl = F.kl_div(F.log_softmax(out / temp, dim=1), soft, log_target=True,
                      reduction="batchmean")
        child = (1 - w) * F.cross_entropy(out, yb) + w * temp * temp * kl
        child.backward()
        child_sum += child.detach()
    opt.step()
    return torch.stack([loss.detach(), child_sum / max(1, len(children))])


class _Display:
    """A rich progress bar when `stream` is a terminal, else one plain line per epoch (logs,
    pipes)."""

    def __init__(self, stream, enabled: bool, epochs: int, steps: int, done: int) -> None:
        self.stream, self.enabled, self.epochs, self.steps = stream, enabled, epochs, steps
        self.bar = None
        if enabled and stream.isatty():
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                TimeElapsedColumn(), console=Console(file=stream), transient=False)
            self.task = self.bar.add_task("supernet", total=epochs * steps, completed=done * steps,
                                          info="")
            self.bar.start()

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)
        elif self.enabled:
            print(text, file=self.stream, flush=True)

    def step(self, epoch: int, phase: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1,
                            description=f"supernet {epoch}/{self.epochs} {phase}")

    def epoch(self, rec: dict) -> None:
        big, kids = rec["loss_largest"], rec["loss_children"]
        text = (f"supernet epoch {rec['epoch']}/{self.epochs} ({rec['phase']}): loss {big:.4f} "
                f"largest, {kids:.4f} children, {rec['time_s']:.1f} s")
        if self.bar is not None:
            self.bar.update(self.task, info=f"loss {big:.3f} / {kids:.3f}")
        else:
            self.line(f"mincap: {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _load(dirs: list[Path], name: str, device):
    for d in dirs:
        try:
            return torch.load(d / name, map_location=device, weights_only=True), d / name
        except FileNotFoundError:
            continue
        except (OSError, RuntimeError, EOFError) as err:  # unreadable: train afresh, not fail
            print(f"mincap: ignoring unreadable supernet checkpoint {d / name} ({err})",
                  file=sys.stderr)
    return None, None


def _save(blob: dict, dirs: list[Path], name: str, where: Path | None) -> Path | None:
    """Write atomically (a temporary file, then rename): a kill leaves the last epoch's file
    whole."""
    for d in ([where.parent] if where is not None else []) + dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f".{name}.{os.getpid()}.tmp"
            torch.save(blob, tmp)
            os.replace(tmp, d / name)
            return d / name
        except OSError:
            continue
    return None


def train_supernet(space: SupernetSpace, splits: Splits, recipe: SupernetRecipe = SupernetRecipe(),
                   *, n_val: int | None = None, split_seed: int = 0, limit: int | None = None,
                   root=None, device=None, use_cache: bool = True, progress: bool = True,
                   stream=None, deadline: float | None = None) -> SupernetRun:
    """The supernet of `space` trained by `recipe` on `splits.train`: loaded when cached, resumed
    from its last epoch when a run was interrupted, else trained from the start.

    `n_val`/`split_seed`/`limit` describe how `splits` was drawn (the cache key). Raises
    `NonFiniteLoss` when the loss becomes NaN or inf (the epoch is not saved)."""
    space = space.with_data(splits.in_shape, splits.n_classes)
    device = torch.device(device or splits.train.x.device)
    n_val = len(splits.val) if n_val is None else n_val
    name = supernet_name(splits, space, recipe, n_val=n_val, split_seed=split_seed, limit=limit)
    dirs = supernet_dirs(root)
    torch.manual_seed(recipe.seed)  # the initial weights
    net = Supernet(space).to(device)
    decay = [p for n, p in net.named_parameters() if not n.startswith("steps.")]
    # No decay on the log-steps: pulling log(step) toward 0 (a step of 1.0) has no meaning.
    opt = torch.optim.AdamW([{"params": decay}, {"params": list(net.steps), "weight_decay": 0.0}],
                            lr=recipe.lr, weight_decay=recipe.weight_decay)
    n = len(splits.train)
    bs = min(recipe.batch_size, n)
    steps = max(1, n // bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle(recipe.epochs * steps))
    gen = torch.Generator().manual_seed(recipe.seed)  # batches and shifts, as the engine's
    cfg_gen = torch.Generator().manual_seed(recipe.seed + 1)  # the random sub-networks
    run = SupernetRun(net, recipe, name, None)
    blob, path = _load(dirs, name, device) if use_cache else (None, None)
    if blob is not None:
        net.load_state_dict(blob["net"])
        opt.load_state_dict(blob["opt"])
        sched.load_state_dict(blob["sched"])
        gen.set_state(blob["gen"].cpu())  # map_location moved it with the weights
        cfg_gen.set_state(blob["cfg_gen"].cpu())
        run.history, run.resumed_epoch = list(blob["history"]), int(blob["epoch"])
        run.cache_path = path
        run.train_time_s = float(blob["train_time_s"])
    show = _Display(stream or sys.stderr, progress, recipe.epochs, steps, run.resumed_epoch)
    if run.resumed_epoch < recipe.epochs:
        start = run.resumed_epoch
        show.line(f"mincap: {'resuming' if start else 'training'} the supernet ({recipe.epochs} "
                  f"epochs, train split only{f', from epoch {start}' if start else ''})")
        x = prepare(splits.train.x.to(device))  # the train split, once, as one tensor
        y = splits.train.y.to(device)
    try:
        for epoch in range(run.resumed_epoch, recipe.epochs):
            quantized = epoch >= recipe.qat_start
            sandwich = epoch >= recipe.largest_epochs
            phase = "qat" if quantized else "float" if sandwich else "largest"
            reach = recipe.reach(epoch)
            kids = space if reach >= 1.0 else space.top(reach)  # once per epoch, not per step
            net.train()
            te = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(device)
            sums = torch.zeros(2, device=device)
            for i in range(steps):
                if deadline is not None and _now() >= deadline:
                    run.stopped = True
                    break
                idx = perm[i * bs : (i + 1) * bs]
                xb = x[idx]
                if recipe.augment_shift:
                    xb = _shift(xb, recipe.augment_shift, gen)
                sums += _step(net, xb, y[idx], opt, recipe, cfg_gen, quantized, sandwich, kids)
                sched.step()
                show.step(epoch + 1, phase)
            if run.stopped:  # the epoch in progress is not saved: the file keeps the last whole one
                show.line(f"mincap: the deadline stopped the supernet's training in epoch {epoch + 1}; "
                          f"{epoch} of {recipe.epochs} epochs are saved (the next run resumes there)")
                break
            largest, children = (float(v) / steps for v in sums)  # one sync per epoch
            if not (math.isfinite(largest) and math.isfinite(children)):
                bad = largest if not math.isfinite(largest) else children
                raise NonFiniteLoss(f"supernet loss became {bad} in epoch {epoch + 1} ({phase}); "
                                    "lower the recipe's lr")
            if recipe.sort_channels and not quantized:  # before any learned step exists
                sort_channels(net, opt)
            rec = {"epoch": epoch + 1, "phase": phase, "loss_largest": largest,
                   "loss_children": children, "time_s": round(time.perf_counter() - te, 3)}
            if reach < 1.0:
                rec["reach"] = round(reach, 4)
            run.history.append(rec)
            run.train_time_s += rec["time_s"]
            if use_cache:
                blob = {"format": FORMAT, "key": name, "epoch": epoch + 1, "net": net.state_dict(),
                        "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": gen.get_state(), "cfg_gen": cfg_gen.get_state(),
                        "history": run.history, "train_time_s": run.train_time_s,
                        "space": space.to_dict(), "recipe": recipe.to_dict()}
                saved = _save(blob, dirs, name, run.cache_path)
                run.cache_path = saved or run.cache_path
            show.epoch(rec)
    finally:
        show.close()
    net.eval()
    return run
