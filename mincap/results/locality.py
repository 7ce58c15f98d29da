"""Locality and symmetry (issue 17; Lin, Tegmark & Rolnick 2017): the four cells and the depth table.

Four studies at one common target with the same budget: an MLP-only and a CNN-only search space,
each on `mnist` and on `mnist-permuted` (one fixed pixel permutation). The permutation is an
exact symmetry of an MLP (permute its first layer's inputs), so its minimal size should not
change; a CNN's kernels rely on neighbouring pixels being related, so its advantage should go.
A cell is recognized by its study name, `locality-<mlp|cnn>-<mnist|permuted>`
(`studies/locality/`). Depth: the smallest target-reaching network per family and depth
(`smallest_by_depth` of each summary, from every complete trial, not only the Pareto front).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

__all__ = ["CELLS", "FAMILIES", "LocalityInfo", "cell_of", "locality_info"]

FAMILIES = ("mlp", "cnn")
INPUTS = ("mnist", "permuted")
CELLS = tuple((f, d) for f in FAMILIES for d in INPUTS)
_NAME = re.compile(r"^locality-(mlp|cnn)-(mnist|permuted)$")
_DATASET = {"mnist": "mnist", "permuted": "mnist-permuted"}


def cell_of(rung: dict[str, Any]) -> tuple[str, str] | None:
    """(family, input) of a locality study's summary, or None for any other study."""
    m = _NAME.match(rung.get("study") or "")
    if not m or rung.get("dataset") != _DATASET[m.group(2)]:
        return None
    return m.group(1), m.group(2)


class LocalityInfo(NamedTuple):
    """What the locality figure and tables show."""

    cells: dict[tuple[str, str], dict[str, Any]]  # (family, input) -> its row
    target: float | None  # the common target (None if the cells disagree: see `targets`)
    targets: list[float]
    ratios: dict[str, float | None]  # permuted / mnist per family; cnn / mlp per input
    depth: list[dict[str, Any]]  # family, input, depth, smallest feasible bits, params, best val acc, trials


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def locality_info(rungs: list[dict[str, Any]]) -> LocalityInfo:
    """The four cells' rows, their ratios and the depth table, from their summaries."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    depth = []
    for r in rungs:
        cell = cell_of(r)
        if cell is None:
            continue
        c = r.get("chosen") or {}
        cfg = r.get("config") or {}
        cells[cell] = {
            "family": cell[0], "input": cell[1], "study": r["study"], "dataset": r["dataset"],
            "target": r["target"], "artifact_bits": c.get("artifact_bits"), "n_params": c.get("n_params"),
            "val_acc": c.get("val_acc"), "test_acc": c.get("test_acc"), "spec": c.get("spec"),
            "bits_per_layer": c.get("bits_per_layer"),
            "front": [(f["artifact_bits"], f["val_acc"]) for f in r.get("pareto_front") or []],
            "n_trials": r.get("n_trials"), "complete": ((r.get("states") or {}).get("COMPLETE") or {}).get("trials", 0),
            "wall_s": r.get("search_wall_s"), "budget_timeout_s": cfg.get("budget_timeout_s"),
            "budget_trials": cfg.get("budget_trials"),
        }
        for d in r.get("smallest_by_depth") or []:
            best = d.get("smallest") or {}
            depth.append({"family": d["family"], "input": cell[1], "depth": d["depth"],
                          "artifact_bits": best.get("artifact_bits"), "n_params": best.get("n_params"),
                          "val_acc": best.get("val_acc"), "spec": best.get("spec"),
                          "best_val_acc": d.get("best_val_acc"), "n_complete": d.get("n_complete")})
    targets = sorted({w["target"] for w in cells.values()})
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
