"""Locality and symmetry (issue 17; Lin, Tegmark & Rolnick 2017): the four cells and the depth table.

Four studies at one common target with the same budget: an MLP-only and a CNN-only search space,
each on `mnist` and on `mnist-permuted` (one fixed pixel permutation). The permutation is an
exact symmetry of an MLP (permute its first layer's inputs), so its minimal size should not
change; a CNN's kernels rely on neighbouring pixels being related, so its advantage should go.
A cell is recognized by its study name: `locality-<mlp|cnn>-<mnist|permuted>` (issue 17,
`studies/locality/`, one study a cell) or `locality3-<mlp|cnn>-<mnist|permuted>-<part>` (issue 31,
`studies/locality3/`: a cell is several studies, an MLP's one per depth, a CNN's one per head,
whose budgets add up to the cell's). A cell of several studies is merged: its network is the
smallest reaching the target over its studies' chosen ones (the project's selection rule, on
validation; each study's test accuracy is only reported), its trials, wall time and budget are
the sums. Depth: the smallest
target-reaching network per family and depth (`smallest_by_depth` of each summary, from every
complete trial, not only the Pareto front), merged over a cell's studies the same way.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from mincap.evaluation.selection import smallest_reaching
from mincap.results.stored import search_time_s

__all__ = ["CELLS", "FAMILIES", "LocalityInfo", "cell_of", "locality_info"]

FAMILIES = ("mlp", "cnn")
INPUTS = ("mnist", "permuted")
CELLS = tuple((f, d) for f in FAMILIES for d in INPUTS)
_NAME = re.compile(r"^(?:locality-(mlp|cnn)-(mnist|permuted)|locality3-(mlp|cnn)-(mnist|permuted)-[a-z0-9]+)$")
_DATASET = {"mnist": "mnist", "permuted": "mnist-permuted"}


def cell_of(rung: dict[str, Any]) -> tuple[str, str] | None:
    """(family, input) of a locality study's summary, or None for any other study."""
    m = _NAME.match(rung.get("study") or "")
    if not m:
        return None
    cell = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return cell if rung.get("dataset") == _DATASET[cell[1]] else None


class LocalityInfo(NamedTuple):
    """What the locality figure and tables show."""

    cells: dict[tuple[str, str], dict[str, Any]]  # (family, input) -> its row
    target: float | None  # the common target (None if the cells disagree: see `targets`)
    targets: list[float]
    ratios: dict[str, float | None]  # permuted / mnist per family; cnn / mlp per input
    depth: list[dict[str, Any]]  # family, input, depth, smallest feasible bits, params, best val acc, trials


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def _study_row(r: dict[str, Any], cell: tuple[str, str]) -> dict[str, Any]:
    c = r.get("chosen") or {}
    cfg = r.get("config") or {}
    return {
        "family": cell[0], "input": cell[1], "study": r["study"], "dataset": r["dataset"],
        "target": r["target"], "artifact_bits": c.get("artifact_bits"), "n_params": c.get("n_params"),
        "val_acc": c.get("val_acc"), "test_acc": c.get("test_acc"), "spec": c.get("spec"),
        "bits_per_layer": c.get("bits_per_layer"), "replicates": c.get("replicates"),
        "front": [(f["artifact_bits"], f["val_acc"]) for f in r.get("pareto_front") or []],
        "n_trials": r.get("n_trials"), "complete": ((r.get("states") or {}).get("COMPLETE") or {}).get("trials", 0),
        "wall_s": search_time_s(r), "budget_timeout_s": cfg.get("budget_timeout_s"),
        "budget_trials": cfg.get("budget_trials"),
    }


def _sum(rows, key):
    vals = [w[key] for w in rows if w.get(key) is not None]
    return sum(vals) if vals else None


def _pareto(points) -> list[tuple[float, float]]:
    """The (bits, accuracy) points no other point beats in both: the union of fronts, filtered."""
    out: list[tuple[float, float]] = []
    for b, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or a > out[-1][1]:
            out.append((b, a))
    return out


def _merge_cell(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's row from its studies' rows (one row: itself)."""
    if len(rows) == 1:
        return rows[0]
    targets = {w["target"] for w in rows}
    chosen = smallest_reaching(rows, min(targets), bits=lambda w: w["artifact_bits"], val_acc=lambda w: w["val_acc"],
                               order=lambda w: w["study"])  # type: ignore[arg-type]
    keep = {k: (chosen or {}).get(k) for k in ("artifact_bits", "n_params", "val_acc", "test_acc", "spec",
                                                "bits_per_layer", "replicates")}
    first = rows[0]
    return {
        "family": first["family"], "input": first["input"], "dataset": first["dataset"],
        "study": chosen["study"] if chosen else ", ".join(w["study"] for w in rows),
        "target": first["target"] if len(targets) == 1 else None, **keep,
        "front": _pareto(p for w in rows for p in w["front"]),
        "n_trials": _sum(rows, "n_trials"), "complete": _sum(rows, "complete"), "wall_s": _sum(rows, "wall_s"),
        "budget_timeout_s": _sum(rows, "budget_timeout_s"), "budget_trials": None,
    }


def _merge_depth(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    best = smallest_reaching(rows, target, bits=lambda d: d["artifact_bits"], val_acc=lambda d: d["val_acc"],
                             order=lambda d: d["study"]) or {}
    return {"family": rows[0]["family"], "input": rows[0]["input"], "depth": rows[0]["depth"],
            "artifact_bits": best.get("artifact_bits"), "n_params": best.get("n_params"),
            "val_acc": best.get("val_acc"), "spec": best.get("spec"),
            "best_val_acc": max((d["best_val_acc"] for d in rows if d["best_val_acc"] is not None), default=None),
            "n_complete": sum(d["n_complete"] or 0 for d in rows)}


def locality_info(rungs: list[dict[str, Any]]) -> LocalityInfo:
    """The four cells' rows, their ratios and the depth table, from their summaries."""
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    depth_rows: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rungs:
        cell = cell_of(r)
        if cell is None:
            continue
        by_cell.setdefault(cell, []).append(_study_row(r, cell))
        for d in r.get("smallest_by_depth") or []:
            best = d.get("smallest") or {}
            depth_rows.setdefault((d["family"], cell[1], d["depth"]), []).append(
                {"family": d["family"], "input": cell[1], "depth": d["depth"], "study": r["study"],
                 "target": r["target"], "artifact_bits": best.get("artifact_bits"),
                 "n_params": best.get("n_params"), "val_acc": best.get("val_acc"), "spec": best.get("spec"),
                 "best_val_acc": d.get("best_val_acc"), "n_complete": d.get("n_complete")})
    cells = {k: _merge_cell(sorted(v, key=lambda w: w["study"])) for k, v in by_cell.items()}
    depth = [_merge_depth(v, min(d["target"] for d in v)) for v in depth_rows.values()]
    targets = sorted({t for v in by_cell.values() for t in (w["target"] for w in v)})
    bits = {k: w["artifact_bits"] for k, w in cells.items()}
    ratios = {
        "mlp permuted / mnist": _ratio(bits.get(("mlp", "permuted")), bits.get(("mlp", "mnist"))),
        "cnn permuted / mnist": _ratio(bits.get(("cnn", "permuted")), bits.get(("cnn", "mnist"))),
        "cnn / mlp on mnist": _ratio(bits.get(("cnn", "mnist")), bits.get(("mlp", "mnist"))),
        "cnn / mlp on permuted": _ratio(bits.get(("cnn", "permuted")), bits.get(("mlp", "permuted"))),
    }
    depth.sort(key=lambda d: (FAMILIES.index(d["family"]) if d["family"] in FAMILIES else 9,
                              INPUTS.index(d["input"]), d["depth"]))
    return LocalityInfo(cells, targets[0] if len(targets) == 1 else None, targets, ratios, depth)
