"""Prequential (online) description length of the labels given the images.

Blier & Ollivier, "The Description Length of Deep Learning Models" (NeurIPS 2018),
section 2.4: sender and receiver both hold the images; the labels are sent in
chunks. The first chunk is sent at the uniform code, log2 K bits per label. For
each later chunk, both sides train the same model (same architecture, seed and
schedule, so the same weights) on all the chunks sent so far, and the chunk's
labels are sent with an arithmetic coder driven by the model's predictions,
costing Σ -log2 p(label | image) bits. The total is an upper bound (up to a few
bits of coder overhead and the fixed size of the training program) on the
information the labels carry beyond the images: a code any receiver can decode.

The schedule is theirs: chunk ends at 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5,
25, 50 and 100 % of the (seeded, shuffled) training set. Models are trained with
`mincap.training.engine` (fresh weights each chunk, no validation split: they see only the
chunks already sent). Tiny chunks get at least `min_steps` optimizer steps. The
predictions are mixed with the uniform distribution, p = (1 - eps) p_model +
eps / K, a fixed part of the code that caps any one label's cost at
log2(K / eps) bits, so one overconfident mistake cannot dominate. A model
trained on few examples is overconfident, so for each chunk the sender also
picks the cheapest of a few fixed options, softmax temperatures `temperatures`
or the uniform code, and sends its index first (log2(#options) bits per chunk,
charged): the total never exceeds the uniform code by more than those few bits
per chunk, which keeps random labels near the uniform code.

`budget_s` bounds the time: once it is spent, training stops (mid-run if need
be) and the remaining chunks are coded with the last model trained. That is
still a valid prequential code, just a longer one; the result says so
(`budget_hit`) and is not cached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mincap.data import Split, Splits
from mincap.errors import MincapError
from mincap.nets.models import parse_arch, prepare
from mincap.training import engine as tr

__all__ = ["BLIER_OLLIVIER_FRACTIONS", "PrequentialConfig", "PrequentialResult", "chunk_ends", "logits_of",
           "mixed_log_probs", "prequential"]

BLIER_OLLIVIER_FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)

# A one-hidden-layer MLP with 1-pixel shift augmentation: on the shared 2-core CPU
# machine, with one thread, the whole schedule on MNIST took 88-135 s (machine
# load varies) for 7.16 kbit (hidden 128 without augmentation: 61 s, 13.9 kbit;
# LeNet-5 did not finish 10 epochs of the schedule in 300 s).
DEFAULT_ARCH = '{"family":"mlp","hidden":[256]}'


@dataclass(frozen=True)
class PrequentialConfig:
    """Settings of the prequential code (all part of the code, hence of the cache key)."""

    fractions: tuple[float, ...] = BLIER_OLLIVIER_FRACTIONS
    arch: str = DEFAULT_ARCH
    epochs: int = 30
    min_steps: int = 100
    batch_size: int = 128
    lr: float = 0.003
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    augment_shift: int = 1
    eps: float = 0.001
    temperatures: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0)
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fractions"] = list(self.fractions)
        d["temperatures"] = list(self.temperatures)
        return d


@dataclass
class PrequentialResult:
    bits_total: float
    uniform_bits: float
    n: int
    chunks: list[dict] = field(default_factory=list)
    budget_hit: bool = False
    time_s: float = 0.0

    @property
    def fraction_of_uniform(self) -> float:
        return self.bits_total / self.uniform_bits


def chunk_ends(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Chunk end indices for n examples: round(f * n), deduplicated, each >= 1, last = n."""
    if n < 2:
        raise MincapError(f"prequential: needs at least 2 examples, got {n}")
    fr = list(fractions)
    if not fr or any(not 0 < f <= 1 for f in fr) or fr != sorted(fr) or fr[-1] != 1.0:
        raise MincapError(f"prequential: fractions must increase within (0, 1] and end at 1, got {fr}")
    ends: list[int] = []
    for f in fr:
        e = min(n, max(1, round(f * n)))
        if not ends or e > ends[-1]:
            ends.append(e)
    return ends


def logits_of(model, x: torch.Tensor) -> torch.Tensor:
    """`model`'s logits (float64) on uint8 images `x`, in eval mode, 5,000 at a time."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(prepare(x[i : i + 5000])).double() for i in range(0, len(x), 5000)])


def mixed_log_probs(logits: torch.Tensor, y: torch.Tensor, temperature: float, eps: float,
                    n_classes: int) -> torch.Tensor:
    """ln p(y | x) for p = (1 − eps) softmax(logits / T) + eps / K: one confident mistake costs at
    most log2(K / eps) bits. Shared by every code in mincap that sends labels with a network."""
    lp = torch.log_softmax(logits / temperature, dim=1).gather(1, y[:, None]).squeeze(1)
    if eps > 0:
        lp = torch.logaddexp(lp + math.log1p(-eps), torch.full_like(lp, math.log(eps / n_classes)))
    return lp


def _bits_on(model, x, y, cfg: PrequentialConfig, n_classes: int) -> tuple[float, str]:
    """The chunk's cost, Σ -log2 p(y | x), with the cheapest option and its index included.

    Options: the model at each temperature (mixed with eps of uniform), or the
    uniform code; choosing costs log2(#options) bits.
    """
    logits = logits_of(model, x)
    costs: dict[str, float] = {"uniform": len(y) * math.log2(n_classes)}
    for t in cfg.temperatures:
        costs[f"T={t:g}"] = float(-mixed_log_probs(logits, y, t, cfg.eps, n_classes).sum()) / math.log(2)
    best = min(costs, key=costs.get)
    return costs[best] + math.log2(len(costs)), best


def prequential(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    cfg: PrequentialConfig = PrequentialConfig(),
    *,
    budget_s: float | None = None,
    on_chunk: Callable[[int, int, dict], None] | None = None,
) -> PrequentialResult:
    """The prequential code length, in bits, of labels `y` given images `x` (uint8 NCHW).

    `on_chunk(k, n_chunks, info)` is called after each chunk is coded (progress).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 4 or x.dtype != np.uint8 or len(x) != len(y):
        raise MincapError(f"prequential: need uint8 images (N, C, H, W) and N labels, got {x.shape}, {y.shape}")
    if not 0 <= cfg.eps < 1:
        raise MincapError(f"prequential: eps must be in [0, 1), got {cfg.eps}")
    if any(not t > 0 for t in cfg.temperatures):
        raise MincapError(f"prequential: temperatures must be positive, got {cfg.temperatures}")
    if budget_s is not None and budget_s <= 0:
        raise MincapError(f"--budget must be positive seconds, got {budget_s}")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise MincapError(f"prequential: labels must be in 0..{n_classes - 1}")
    n = len(y)
    ends = chunk_ends(n, cfg.fractions)
    spec = parse_arch(cfg.arch).with_data(tuple(x.shape[1:]), n_classes)
    perm = np.random.default_rng(cfg.seed).permutation(n)
    xt = torch.from_numpy(x[perm]).contiguous()
    yt = torch.from_numpy(y[perm].astype(np.int64)).contiguous()

    t0 = time.perf_counter()
    deadline = None if budget_s is None else t0 + budget_s
    uniform_per_label = math.log2(n_classes)
    res = PrequentialResult(0.0, n * uniform_per_label, n)
    first = {"start": 0, "end": ends[0], "bits": ends[0] * uniform_per_label, "trained_on": 0, "option": "uniform"}
    res.chunks.append(first)
    res.bits_total += first["bits"]
    if on_chunk is not None:
        on_chunk(0, len(ends), first)
    model, trained_on = None, 0
    for k in range(1, len(ends)):
        start, end = ends[k - 1], ends[k]
        out_of_time = deadline is not None and time.perf_counter() >= deadline
        if not out_of_time:
            steps_per_epoch = max(1, start // min(cfg.batch_size, start))
            epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
            tcfg = tr.TrainConfig(
                epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                label_smoothing=cfg.label_smoothing, augment_shift=cfg.augment_shift,
                seed=cfg.seed + k, eval_batch_size=5000,
            )
            # train() reports a validation accuracy each epoch; nothing here selects on it,
            # so a few already-sent examples stand in for the (unneeded) validation split.
            seen = Split(xt[:start], yt[:start])
            splits = Splits("prequential", seen, Split(xt[: min(start, 256)], yt[: min(start, 256)]), n_classes)
            model = tr.init_model(spec, cfg.seed + k)
            run = tr.train(
                model, splits, tcfg, on_epoch=lambda _s: deadline is not None and time.perf_counter() >= deadline
            )
            trained_on = start
            res.budget_hit = res.budget_hit or run.stopped_early
        else:
            res.budget_hit = True
        if model is None:
            bits, option = (end - start) * uniform_per_label, "uniform"
        else:
            bits, option = _bits_on(model, xt[start:end], yt[start:end], cfg, n_classes)
        info = {"start": start, "end": end, "bits": bits, "trained_on": trained_on, "option": option}
        res.chunks.append(info)
        res.bits_total += bits
        if on_chunk is not None:
            on_chunk(k, len(ends), info)
    res.time_s = time.perf_counter() - t0
    return res
