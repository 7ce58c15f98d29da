"""Memorizing random labels (issue 17): Fano's lower bound, MacKay's prediction, and the figure's data.

A network that reproduces N labels drawn uniformly from K classes with accuracy a must hold at
least N·(log2 K − H2(a) − (1 − a)·log2(K − 1)) bits (`fano_bound_bits`). Fano's inequality gives
it for the expected length; for one labelling, counting gives the same: files of at most L bits
are fewer than 2^(L+1), each one's decoded network gets at most 2^(N·(H2(a) + (1 − a)·log2(K − 1)))
labellings right to accuracy a, so a file more than a few dozen bits below the bound exists for a
fraction below 2^-(those bits) of the labellings. An artifact under it means the size accounting
is wrong (something the network needs is not in the file), which `tests/results/test_fano.py`
checks for every random-label network found. For a <= 1/K the bound is 0 (chance needs nothing).

MacKay's capacity rule, about 2 bits per weight, predicts N·log2 K / 2 weights for N such
labels (`mackay_weights`). The rungs are the summaries of the `mnist-random-N` studies
(`studies/capacity/`); `capacity_info` gathers what the figure and the report show, beside the
real-label ladder's points (artifact bits against the information estimate of the labels).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from mincap.data import DATASETS
from mincap.results.ladder import estimate_bits
from mincap.results.stored import search_time_s

__all__ = [
    "CapacityInfo",
    "capacity_info",
    "capacity_rows",
    "fano_bits_per_label",
    "fano_bound_bits",
    "h2",
    "loglog_slope",
    "mackay_weights",
    "memorized_n",
]


def h2(p: float) -> float:
    """The binary entropy of p, in bits (0 at 0 and 1)."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p))


def fano_bits_per_label(acc: float, n_classes: int = 10) -> float:
    """log2 K − H2(a) − (1 − a)·log2(K − 1), floored at 0 (accuracy at or below chance needs no bits)."""
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"accuracy {acc} is not in [0, 1]")
    if acc <= 1.0 / n_classes:
        return 0.0
    return max(0.0, math.log2(n_classes) - h2(acc) - (1.0 - acc) * math.log2(n_classes - 1))


def fano_bound_bits(n: int, acc: float, n_classes: int = 10) -> float:
    """The fewest bits that can reproduce `n` uniformly random labels with accuracy `acc` (Fano)."""
    return n * fano_bits_per_label(acc, n_classes)


def mackay_weights(n: int, n_classes: int = 10) -> float:
    """MacKay's prediction: N labels of log2 K bits each at ~2 bits of capacity per weight."""
    return n * math.log2(n_classes) / 2.0


def memorized_n(dataset: str | None) -> int:
    """N of a memorization set (`mnist-random-N`), 0 for any other dataset."""
    info = DATASETS.get(dataset or "")
    return info.memorize if info else 0


def loglog_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (the exponent of y ~ x^s); None below 2 distinct x."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def capacity_rows(rungs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per random-label rung (smallest N first): what was found against the bounds."""
    rows = []
    for r in rungs:
        n = memorized_n(r.get("dataset"))
        if not n:
            continue
        k = DATASETS[r["dataset"]].n_classes
        c = r.get("chosen") or {}
        bits, acc, params = c.get("artifact_bits"), c.get("val_acc"), c.get("n_params")
        cfg = r.get("config") or {}
        rows.append({
            "dataset": r["dataset"], "n": n, "n_classes": k, "target": r["target"],
            "label_bits": n * math.log2(k),
            "fano_target_bits": fano_bound_bits(n, r["target"], k),
            "mackay_weights": mackay_weights(n, k),
            "artifact_bits": bits, "val_acc": acc, "n_params": params,
            "fano_bits": fano_bound_bits(n, acc, k) if acc is not None else None,
            "bits_per_param": bits / params if bits and params else None,
            "bits_per_label": bits / n if bits else None,
            "params_per_mackay": params / mackay_weights(n, k) if params else None,
            "spec": c.get("spec"), "bits_per_layer": c.get("bits_per_layer"), "test_acc": c.get("test_acc"),
            "front": [(f["artifact_bits"], f["val_acc"]) for f in r.get("pareto_front") or []],
            "n_trials": r.get("n_trials"), "wall_s": search_time_s(r),
            "budget_timeout_s": cfg.get("budget_timeout_s"), "budget_trials": cfg.get("budget_trials"),
        })
    return sorted(rows, key=lambda w: w["n"])


class CapacityInfo(NamedTuple):
    """What the capacity figure and table show."""

    rows: list[dict[str, Any]]  # capacity_rows
    slope_random: float | None  # log-log slope of minimal bits against label information, random labels
    slope_ladder: float | None  # the same over the real-label ladder's chosen networks
    ladder_points: list[tuple[str, float, float]]  # (dataset, information estimate bits, artifact bits)
    estimator: str  # the ladder's information estimate (X of figure 1)


def capacity_info(random_rungs: list[dict[str, Any]], ladder_rungs: list[dict[str, Any]],
                  estimator: str = "prequential") -> CapacityInfo:
    """The capacity figure's data. The X of a random-label rung is the information in its labels,
    exactly N·log2 K (uniform labels independent of the images); the X of a ladder rung is its
    stored `estimator` figure (figure 1's X), so the two slopes are measured on the same axes."""
    rows = capacity_rows(random_rungs)
    found = [w for w in rows if w["artifact_bits"]]
    slope_random = loglog_slope([w["label_bits"] for w in found], [float(w["artifact_bits"]) for w in found])
    ladder_points = []
    for r in ladder_rungs:
        c = r.get("chosen") or {}
        x = estimate_bits((r.get("entropy") or {}).get(estimator))
        if c.get("artifact_bits") and x and not memorized_n(r.get("dataset")):
            ladder_points.append((r.get("dataset") or r.get("study", "?"), float(x), float(c["artifact_bits"])))
    slope_ladder = loglog_slope([p[1] for p in ladder_points], [p[2] for p in ladder_points])
    return CapacityInfo(rows, slope_random, slope_ladder, ladder_points, estimator)
