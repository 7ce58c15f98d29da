"""Multi-fidelity search: screen each trial cheaply, train only the promising ones in full.

Most of a search's hour went to trials that could never reach the target (issue 15: a
complete trial takes ~5 minutes on one core). With `[fidelity] enabled = true`, every
sampled trial is a staged objective inside one Optuna trial:

1. **Screen**: train the trial's network for `epochs` epochs (its own one-cycle schedule
   over those epochs) on the first `subset` train images, with its own bit widths (the
   last of those epochs quantization-aware) and no pruning; export, decode and evaluate
   on validation. The screening point is (artifact bits, validation accuracy), recorded
   as the user attribute `screen` with `screen_key` naming the fidelity (epochs, subset).
2. **Promote or stop**: the trial is promoted when its point lies in the best `promote`
   fraction of the screened trials so far (same `screen_key`, itself included), ranked by
   Pareto front -- non-dominated sorting, fewer bits and higher accuracy both better, as
   MO-ASHA (Schmucker et al. 2021) does for successive halving with several objectives.
   Exactly: promoted when fewer than `promote` x N points lie in fronts ahead of its own.
   A rank on accuracy alone would promote every large network; the Pareto rank keeps a
   small network that screens well against the small networks. Until `min_peers` other
   trials have been screened every trial is promoted, and a screening accuracy below
   `min_val_acc` stops a trial whatever the ranks (a network still near chance after
   the screening budget does not reach 99%).
3. **Full**: a promoted trial trains from scratch with its full recipe: the objective's
   usual path (early stopping, deadline, compression), its result the trial's result.

A stopped trial is PRUNED with `fidelity` = "screen" and a `stop_reason`; a fully trained
one has `fidelity` = "full". Only COMPLETE trials carry objective values and the
feasibility constraint, so screening never enters the Pareto front, the chosen network
or feasibility: the two objectives and the constraint keep their meaning. Seed presets
(enqueued trials with the `seed_preset` attribute) skip screening: they are known-good.

The batched loop (`mincap.search.batched`, groups of trials trained as one computation on a
GPU) does not screen its groups: with screening on, a sampled trial there runs alone through
the one-trial objective, and `mincap search` runs such a study one trial at a time throughout.

Successive halving proper waits for a group of trials and promotes its best; this
staged rule decides at once against the trials screened before (asynchronous, like
ASHA), so it fits Optuna's one-trial-at-a-time loop and several workers unchanged.
"""

from __future__ import annotations

from dataclasses import replace

from mincap.config import CompressConfig, TrainConfig
from mincap.config.study import Fidelity
from mincap.data import Split, Splits

__all__ = ["pareto_ranks", "promote_decision", "screen_configs", "screen_key", "screen_peers", "screen_splits"]


def screen_key(fi: Fidelity) -> str:
    """Names the screening budget: points are only compared at the same one."""
    return f"e{fi.epochs}/n{fi.subset or 'all'}"


def pareto_ranks(points: list[tuple[float, float]]) -> list[int]:
    """Front index of each (bits, acc) point by non-dominated sorting (0: the Pareto front).

    A point dominates another when its bits are <= and its accuracy >=, one strictly.
    """
    n = len(points)
    ranks = [-1] * n
    left = set(range(n))
    rank = 0
    while left:
        front = {i for i in left if not any(_dominates(points[j], points[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def promote_decision(point: tuple[float, float], peers: list[tuple[float, float]], fi: Fidelity) -> tuple[bool, str]:
    """(promote?, why) for a screened trial's (bits, val_acc) given the other screened trials' points."""
    bits, acc = point
    if acc < fi.min_val_acc:
        return False, f"screening val {acc:.4f} below min_val_acc {fi.min_val_acc:.4f}"
    if len(peers) < fi.min_peers:
        return True, f"{len(peers)} screened trials so far (< min_peers {fi.min_peers})"
    points = [*peers, point]
    ranks = pareto_ranks(points)
    ahead = sum(r < ranks[-1] for r in ranks)
    quota = fi.promote * len(points)
    verdict = "promoted" if ahead < quota else "stopped"
    why = f"{verdict}: {ahead} of {len(points)} screened points in fronts ahead of its front {ranks[-1]} " \
          f"(quota {quota:.1f})"
    return ahead < quota, why


def screen_peers(trials, key: str, *, exclude: int) -> list[tuple[float, float]]:
    """Screening points of other trials (any state) recorded at the fidelity `key`."""
    out = []
    for t in trials:
        a = t.user_attrs
        if t.number != exclude and a.get("screen_key") == key and a.get("screen"):
            out.append((float(a["screen"][0]), float(a["screen"][1])))
    return out


def screen_configs(train_cfg: TrainConfig, comp: CompressConfig, fi: Fidelity) -> tuple[TrainConfig, CompressConfig]:
    """The screening run's recipe: `fi.epochs` epochs, the last ones quantized in the trial's proportion
    (at least one, so a bit width that collapses shows), no pruning, sparsity or compression path
    (the screen scores the trained network, the path's step 0)."""
    frac = comp.qat_epochs / max(1, train_cfg.epochs)
    qat = min(fi.epochs, max(1, round(frac * fi.epochs)))
    return (replace(train_cfg, epochs=fi.epochs),
            replace(comp, qat_epochs=qat, prune_ratio=0.0, prune_steps=1, prune_finetune_epochs=0, sparsity=0.0,
                    path=""))


def screen_splits(splits: Splits, fi: Fidelity) -> Splits:
    """The first `fi.subset` train images (all when 0 or more than there are); validation unchanged."""
    n = fi.subset
    if not n or n >= len(splits.train):
        return splits
    return replace(splits, train=Split(splits.train.x[:n], splits.train.y[:n]))
