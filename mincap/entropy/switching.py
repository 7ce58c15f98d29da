"""A tighter prequential code: CNNs of growing size, Blier & Ollivier's chunks, and switching.

Blier & Ollivier (NeurIPS 2018) report 4.10 kbit for MNIST's 60,000 labels given the images;
mincap's MLP prequential code (`mincap.entropy.prequential`) gives about 7.2 kbit. This
estimator follows the paper's own code (github.com/leonardblier/descriptionlengthdeeplearning,
`prequential/mnist.py`, `switch.py`) where it can be followed on a CPU:

- **Chunks**: the first K labels (K = number of classes) are sent at the uniform code; the
  chunk ends then double: K·2^j for j = 1, 2, ... while below n, then n (MNIST: 10, 20, 40,
  ..., 40,960, 60,000).
- **Models of growing size**: several architectures (`archs`: a linear model, a small CNN, a
  larger CNN), each trained afresh on all the chunks sent so far (seeded, so the receiver
  trains the same weights), with shift augmentation; the uniform code is one more "model".
- **Switching between them**: the paper's `switch.py` takes, for each chunk, the smallest
  loss over the models, which is an idealization of the switch distribution of van Erven,
  Grünwald & de Rooij ("Catching up faster by switching sooner", 2007/2012). Here the switch
  distribution itself codes the labels, one label at a time (`switch_code`): a Bayesian
  mixture over sequences of models, whose posterior moves to a larger model once it predicts
  better. Its weights depend only on labels already sent, so it is a real code, a few bits
  longer than the per-chunk minimum and never longer than the best single model by more than
  about log2 of the number of switches' prior cost.

What differs from the paper, on purpose: no early stopping on the chunk being coded (the
paper's training stops on the validation loss of that very chunk, a choice that uses the
labels being sent); a fixed schedule instead (`epochs`, at least `min_steps` steps). As in
`mincap.entropy.prequential`, each model's predictions are mixed with `eps` of the uniform
distribution and, per chunk and model, the sender picks the cheapest softmax temperature of
`temperatures` and sends its index (log2 #temperatures bits each, charged). The whole is an
upper bound on the information the labels add to the images (up to a coder's few bits and
the fixed size of the program).

`budget_s` bounds the time as in `prequential`: once spent, the remaining chunks are coded
with the models last trained (a longer, still valid code; `budget_hit`, not cached).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mincap.data import Split, Splits
from mincap.entropy.prequential import PrequentialResult, logits_of, mixed_log_probs
from mincap.errors import MincapError
from mincap.nets.models import parse_arch
from mincap.training import engine as tr

__all__ = ["SWITCH_ARCHS", "Switch", "SwitchConfig", "doubling_ends", "model_log2probs", "prequential_switch", "switch_code"]

# Growing sizes (parameters on MNIST): softmax regression (7,850), a LeNet-like CNN with 5x5
# convs (~11k), a wider CNN with batch norm, a hidden layer and dropout (~110k). The paper used
# an MLP and a VGG-like net of ~1.2 M parameters, too slow for a shared 2-core CPU.
SWITCH_ARCHS = (
    '{"family":"mlp","hidden":[]}',
    '{"family":"cnn","convs":[[8,5,1,2,2],[16,5,1,2,2]]}',
    '{"family":"cnn","convs":[[16,3,1,2,1],[32,3,1,2,1]],"hidden":[64],"batch_norm":true,"dropout":0.25}',
)


@dataclass(frozen=True)
class SwitchConfig:
    """Settings of the switching prequential code (all part of the code, hence of the cache key)."""

    archs: tuple[str, ...] = SWITCH_ARCHS
    ratio: float = 2.0  # chunk ends K, K·ratio, K·ratio², ... (the paper: 2)
    first: int = 0  # size of the first (uniform) chunk; 0: the number of classes, as the paper
    epochs: int = 15
    min_steps: int = 150
    batch_size: int = 64
    lr: float = 0.003
    weight_decay: float = 1e-4
    augment_shift: int = 2
    eps: float = 0.001
    temperatures: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0)
    theta: float = 0.999  # prior probability of switching again (Alrao's setting by the same authors)
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["archs"] = list(self.archs)
        d["temperatures"] = list(self.temperatures)
        return d


def doubling_ends(n: int, first: int, ratio: float = 2.0) -> list[int]:
    """Chunk ends first, first·ratio, first·ratio², ... below n, then n (the paper's `indexes` plus n)."""
    if n < 2:
        raise MincapError(f"prequential-switch: needs at least 2 examples, got {n}")
    if first < 1 or ratio <= 1:
        raise MincapError(f"prequential-switch: first chunk >= 1 and ratio > 1 needed, got {first}, {ratio}")
    ends, k = [], 0
    while (e := math.floor(first * ratio**k)) < n:
        if not ends or e > ends[-1]:
            ends.append(e)
        k += 1
    return ends + [n]


class Switch:
    """The switch distribution over M predictors (van Erven, Grünwald & de Rooij), one label at a time.

    Weights `a` may still switch, weights `b` have stopped. After label t (1-based) a share
    1/(t+1) of the switching mass, the prior π_T(t+1 | no switch before) of switch times with
    π_T(t) = 1/(t(t-1)), is pooled and given back uniformly over the predictors, a fraction θ
    of it still free to switch. The weights depend only on labels already coded.
    """

    def __init__(self, m: int, theta: float = 0.999):
        if m < 1:
            raise MincapError("switch_code: needs at least one predictor")
        if not 0 < theta < 1:
            raise MincapError(f"switch_code: theta must be in (0, 1), got {theta}")
        self.theta, self.t = theta, 0
        self.prior = np.full(m, 1.0 / m)
        self.a, self.b = theta * self.prior, (1 - theta) * self.prior

    def code(self, log2p: np.ndarray) -> tuple[float, np.ndarray]:
        """(bits, posterior weights before each label) for the next labels; `log2p[t, m]` as in `switch_code`."""
        log2p = np.asarray(log2p, dtype=np.float64)
        if log2p.ndim != 2 or log2p.shape[1] != len(self.prior):
            raise MincapError(f"switch_code: need an (n, {len(self.prior)}) array of log2 probabilities, "
                              f"got shape {log2p.shape}")
        p = np.exp2(log2p)
        post = np.empty_like(p)
        a, b, theta, prior, total = self.a, self.b, self.theta, self.prior, 0.0
        for i in range(len(p)):
            w = a + b  # sums to 1
            post[i] = w
            total -= math.log2(float(w @ p[i]))
            a, b = a * p[i], b * p[i]
            s = a.sum() + b.sum()
            a, b = a / s, b / s
            self.t += 1
            q = 1.0 / (self.t + 1)
            pool = q * a.sum()
            a = a * (1 - q) + theta * pool * prior
            b = b + (1 - theta) * pool * prior
        self.a, self.b = a, b
        return total, post


def switch_code(log2p: np.ndarray, theta: float = 0.999) -> tuple[float, np.ndarray]:
    """Code length in bits of a label sequence under the switch distribution over M predictors.

    `log2p[t, m]`: log2 of the probability predictor m gave the t-th label (each predictor may
    use the labels before t only). Returns (total bits, posterior weight of each predictor
    before each label, shape (n, M)).
    """
    log2p = np.asarray(log2p, dtype=np.float64)
    if log2p.ndim != 2:
        raise MincapError(f"switch_code: need an (n, M) array of log2 probabilities, got shape {log2p.shape}")
    return Switch(log2p.shape[1], theta).code(log2p)


def model_log2probs(model, x: torch.Tensor, y: torch.Tensor, cfg: SwitchConfig, n_classes: int) -> tuple[np.ndarray, str]:
    """log2 p(y | x) per example under `model`, at the temperature cheapest on this chunk, eps-mixed.

    Returns (log2 probabilities, the temperature's name); choosing costs log2(#temperatures) bits,
    charged by the caller.
    """
    logits = logits_of(model, x)
    best, best_cost, best_lp = "", math.inf, None
    for t in cfg.temperatures:
        lp = mixed_log_probs(logits, y, t, cfg.eps, n_classes)
        cost = float(-lp.sum())
        if cost < best_cost:
            best, best_cost, best_lp = f"T={t:g}", cost, lp
    return (best_lp / math.log(2)).numpy(), best


def _check(x: np.ndarray, y: np.ndarray, n_classes: int, cfg: SwitchConfig, budget_s) -> None:
    if x.ndim != 4 or x.dtype != np.uint8 or len(x) != len(y):
        raise MincapError(f"prequential-switch: need uint8 images (N, C, H, W) and N labels, got {x.shape}, {y.shape}")
    if not cfg.archs:
        raise MincapError("prequential-switch: needs at least one architecture")
    if not 0 <= cfg.eps < 1 or any(not t > 0 for t in cfg.temperatures) or not cfg.temperatures:
        raise MincapError("prequential-switch: eps must be in [0, 1) and temperatures positive")
    if budget_s is not None and budget_s <= 0:
        raise MincapError(f"--budget must be positive seconds, got {budget_s}")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise MincapError(f"prequential-switch: labels must be in 0..{n_classes - 1}")


def _train_one(spec, xt, yt, start: int, n_classes: int, cfg: SwitchConfig, seed: int, deadline) -> tuple[torch.nn.Module, bool]:
    steps_per_epoch = max(1, start // min(cfg.batch_size, start))
    tcfg = tr.TrainConfig(
        epochs=max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch)), batch_size=cfg.batch_size, lr=cfg.lr,
        weight_decay=cfg.weight_decay, augment_shift=cfg.augment_shift, seed=seed, eval_batch_size=5000,
    )
    # train() reports a validation accuracy each epoch; nothing here selects on it, so a few
    # already-sent examples stand in for the (unneeded) validation split.
    small = min(start, 64)
    splits = Splits("prequential-switch", Split(xt[:start], yt[:start]), Split(xt[:small], yt[:small]),
                    n_classes)
    model = tr.init_model(spec, seed)
    run = tr.train(model, splits, tcfg, on_epoch=lambda _s: deadline is not None and time.perf_counter() >= deadline)
    return model, run.stopped_early


def prequential_switch(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    cfg: SwitchConfig = SwitchConfig(),
    *,
    budget_s: float | None = None,
    on_chunk: Callable[[int, int, dict], None] | None = None,
) -> PrequentialResult:
    """The switching prequential code length, in bits, of labels `y` given images `x` (uint8 NCHW)."""
    x, y = np.asarray(x), np.asarray(y)
    _check(x, y, n_classes, cfg, budget_s)
    n = len(y)
    ends = doubling_ends(n, cfg.first or n_classes, cfg.ratio)
    specs = [parse_arch(a).with_data(tuple(x.shape[1:]), n_classes) for a in cfg.archs]
    perm = np.random.default_rng(cfg.seed).permutation(n)
    xt = torch.from_numpy(x[perm]).contiguous()
    yt = torch.from_numpy(y[perm].astype(np.int64)).contiguous()
    t0 = time.perf_counter()
    deadline = None if budget_s is None else t0 + budget_s
    uniform = math.log2(n_classes)
    res = PrequentialResult(0.0, n * uniform, n)
    models: list = [None] * len(specs)
    switch = Switch(len(specs) + 1, cfg.theta)  # predictor 0 is the uniform code
    choose_bits = math.log2(len(cfg.temperatures))
    for k, end in enumerate(ends):
        start = ends[k - 1] if k else 0
        info = {"start": start, "end": end, "trained_on": 0, "options": {}}
        if k and not (deadline is not None and time.perf_counter() >= deadline):
            for j, spec in enumerate(specs):
                if deadline is not None and time.perf_counter() >= deadline:
                    res.budget_hit = True
                    break
                models[j], cut = _train_one(spec, xt, yt, start, n_classes, cfg, cfg.seed + 1000 * j + k, deadline)
                res.budget_hit = res.budget_hit or cut
            info["trained_on"] = start
        elif k:
            res.budget_hit = True
        # A model not trained yet predicts uniformly (the first chunk: all of them).
        log2p = np.full((end - start, len(specs) + 1), -uniform)
        side = 0.0
        for j, model in enumerate(models):
            if model is not None:
                log2p[:, j + 1], info["options"][f"model{j + 1}"] = model_log2probs(
                    model, xt[start:end], yt[start:end], cfg, n_classes)
                side += choose_bits  # the temperature's index, sent before the chunk
        bits, post = switch.code(log2p)
        info["bits"] = bits + side
        info["model_bits"] = [round(float(v), 1) for v in -log2p.sum(axis=0)]
        info["posterior_end"] = [round(float(v), 4) for v in post[-1]]
        res.chunks.append(info)
        res.bits_total += info["bits"]
        if on_chunk is not None:
            on_chunk(k, len(ends), info)
    res.time_s = time.perf_counter() - t0
    return res
