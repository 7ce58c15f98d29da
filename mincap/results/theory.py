"""Issue 17's section of studies/RESULTS.md: memorizing random labels, locality and symmetry.

`theory_section(report_path, ladder_rungs)` reads the committed summaries in the `capacity/`
and `locality3/` (once all of it has run; else `locality/`) folders beside the report or above the ladder's summaries (`<study>.summary.json`, written by
`mincap summary STUDY.toml --save`), draws `capacity.png` and `locality.png` beside the report,
and returns the section's markdown lines: figures, tables, budgets, and sentences generated
from the numbers. Study files there without a summary are listed as not run yet; with no summary
in either folder, the section is empty. `mincap plot --report` calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mincap.report import fmt_acc, fmt_duration, fmt_target, spec_short
from mincap.results.capacity import capacity_info
from mincap.results.locality import CELLS, locality_info
from mincap.results.stored import read_summary
from mincap.results.theory_figures import plot_capacity, plot_locality

__all__ = ["read_folder", "theory_section"]


def read_folder(folder: Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """(summaries as rungs, study files with no summary yet) of one folder; both empty if it is absent."""
    if not folder.is_dir():
        return [], []
    rungs = []
    for p in sorted(folder.glob("*.summary.json")):
        s = read_summary(p)
        s["source"] = str(p)
        rungs.append(s)
    missing = [t for t in sorted(folder.glob("*.toml")) if not t.with_name(t.stem + ".summary.json").is_file()]
    return rungs, missing


# Issue 31's cells (locality3/) replace issue 17's (locality/) once every one of their studies has a
# summary: one budget per table and figure, never a mix of the two (as the ladder's report does).
LOCALITY_FOLDERS = ("locality3", "locality")  # the newest first


def _locality_folder(studies: Path) -> Path:
    for name in LOCALITY_FOLDERS:
        rungs, missing = read_folder(studies / name)
        if rungs and not missing:
            return studies / name
    return studies / LOCALITY_FOLDERS[-1]


def _span(values: list[float], fmt: str, unit: str = "") -> str:
    lo, hi = min(values), max(values)
    return f"{lo:{fmt}}{unit}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}{unit} to {hi:{fmt}}{unit}"


def _int(v) -> str:
    return "-" if v is None else f"{round(v):,}"


def _budget(w: dict[str, Any]) -> str:
    t = w.get("budget_timeout_s")
    return (fmt_duration(t) if t else "no time limit") + (f" / {w['budget_trials']} trials"
                                                          if w.get("budget_trials") is not None else "")


def _capacity_lines(info, figure: str) -> list[str]:
    rows = info.rows
    out = [
        "### Memorizing random labels (MacKay's capacity)", "",
        f"![random labels: size vs Fano's bound and MacKay's prediction]({figure})", "",
        "`mnist-random-N`: the first N MNIST training images with labels drawn uniformly at random "
        "(seeded). **Validation is the training set itself**: the target is accuracy on the N images "
        "trained on (memorization); test accuracy is on N other images with other random labels, "
        "where chance (10%) is all a network can score. Fano: reproducing N random labels with "
        "accuracy a needs at least N·(log2 10 − H2(a) − (1 − a)·log2 9) bits. MacKay: N·log2 10 / 2 "
        "weights.", "",
        "| N | target | Fano bound at target (bits) | smallest network | artifact bits | accuracy on the N "
        "images | Fano bound at it (bits) | bits / Fano | parameters | bits / parameter | MacKay weights | "
        "parameters / MacKay | test acc (chance) | trials | search wall time | budget |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for w in rows:
        found = w["artifact_bits"] is not None
        out.append("| " + " | ".join([
            f"{w['n']:,}", fmt_target(w["target"]), _int(w["fano_target_bits"]),
            f"`{spec_short(w['spec'], w['bits_per_layer'])}`" if found else "none reached the target",
            _int(w["artifact_bits"]), fmt_acc(w["val_acc"]), _int(w["fano_bits"]),
            f"{w['artifact_bits'] / w['fano_bits']:.2f}" if found and w["fano_bits"] else "-",
            _int(w["n_params"]), f"{w['bits_per_param']:.2f}" if w["bits_per_param"] else "-",
            _int(w["mackay_weights"]), f"{w['params_per_mackay']:.2f}" if w["params_per_mackay"] else "-",
            fmt_acc(w["test_acc"]), str(w["n_trials"] or 0), fmt_duration(w["wall_s"]), _budget(w),
        ]) + " |")
    found = [w for w in rows if w["artifact_bits"]]
    out.append("")
    if found:
        ratios = [w["artifact_bits"] / w["fano_bits"] for w in found if w["fano_bits"]]
        bpp = [w["bits_per_param"] for w in found if w["bits_per_param"]]
        pm = [w["params_per_mackay"] for w in found if w["params_per_mackay"]]
        slope = "n/a (fewer than two rungs)" if info.slope_random is None else f"{info.slope_random:.2f}"
        ladder = ("n/a (fewer than two ladder rungs with a network and an estimate)" if info.slope_ladder is None
                  else f"{info.slope_ladder:.2f} over {len(info.ladder_points)} rungs")
        out += [
            f"- Generated: {len(found)} of {len(rows)} rungs reached their target; the smallest networks are "
            f"{_span(ratios, '.2f', '×')} Fano's bound at the accuracy they reached"
            + (f", at {_span(bpp, '.2f')} bits per parameter" if bpp else "")
            + (f", with {_span(pm, '.2f', '×')} MacKay's predicted weights" if pm else "") + ".",
            f"- Log-log slope of bits against the information in the labels: random labels {slope}; "
            f"the real-label ladder (X = {info.estimator}) {ladder}.",
            "",
        ]
    return out


def _locality_lines(info, figure: str) -> list[str]:
    out = [
        "### Locality and symmetry (Lin, Tegmark & Rolnick)", "",
        f"![locality: MLP and CNN on mnist and mnist-permuted]({figure})", "",
        "`mnist-permuted`: one fixed, seeded pixel permutation applied to train, validation and test alike "
        "(the same split as `mnist`). MLP-only and CNN-only search spaces, each on both, at one common "
        "target with the same budget. Prediction: the MLP's minimal size does not change (the permutation "
        "is an exact symmetry for it); the CNN's advantage disappears.", "",
    ]
    if info.target is None and info.targets:
        out += [f"**The cells' targets differ** ({', '.join(fmt_target(t) for t in info.targets)}): "
                "they are not comparable until their study files agree.", ""]
    out += ["| cell | dataset | target | smallest network | artifact bits | parameters | val acc | test acc "
            "(reported) | trials (complete) | search wall time | budget |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for cell in CELLS:
        w = info.cells.get(cell)
        if w is None:
            out.append(f"| {cell[0]} / {cell[1]} | - | - | not run | - | - | - | - | - | - | - |")
            continue
        found = w["artifact_bits"] is not None
        out.append("| " + " | ".join([
            f"{cell[0]} / {cell[1]}", w["dataset"], fmt_target(w["target"]),
            f"`{spec_short(w['spec'], w['bits_per_layer'])}`" if found else "none reached the target",
            _int(w["artifact_bits"]), _int(w["n_params"]), fmt_acc(w["val_acc"]), fmt_acc(w["test_acc"]),
            f"{w['n_trials']} ({w['complete']})", fmt_duration(w["wall_s"]), _budget(w),
        ]) + " |")
    out.append("")
    reps = []
    for cell in CELLS:
        r = (info.cells.get(cell) or {}).get("replicates")
        if r and r.get("val_acc"):
            reps.append(f"{cell[0]} / {cell[1]}: {r['n_reach']} of {len(r['val_acc'])} "
                        f"({', '.join(fmt_acc(a) for a in r['val_acc'])})")
    if reps:
        out += ["- Replicates (the chosen network retrained from scratch with other seeds, validation): "
                + "; ".join(reps) + ".", ""]
    ratios = [f"{k}: {v:.2f}×" for k, v in info.ratios.items() if v is not None]
    if ratios:
        out += ["- Generated, smallest bits: " + "; ".join(ratios) + ".", ""]
    if info.depth:
        out += ["Depth (no-flattening): the smallest network reaching the target per family and depth, from "
                "every complete trial of each cell (depth = conv blocks of a CNN, hidden layers of an MLP). "
                "Where a cell's study drew the depth itself, the depths shared its budget as the sampler "
                "chose, so a depth with few trials is less explored.", "",
                "| family | input | depth | complete trials | best val acc | smallest reaching the target | "
                "artifact bits | parameters | val acc |",
                "|---|---|---:|---:|---:|---|---:|---:|---:|"]
        for d in info.depth:
            found = d["artifact_bits"] is not None
            out.append("| " + " | ".join([
                d["family"], d["input"], str(d["depth"]), str(d["n_complete"]), fmt_acc(d["best_val_acc"]),
                f"`{spec_short(d['spec'])}`" if found else "none", _int(d["artifact_bits"]),
                _int(d["n_params"]), fmt_acc(d["val_acc"]),
            ]) + " |")
        out.append("")
    return out


def _studies_dir(base: Path, ladder_rungs: list[dict[str, Any]]) -> Path | None:
    """The folder holding `capacity/` or `locality/`: beside the report, else one or two levels above a
    ladder summary (`--from-json studies/ladder` finds studies/), as the information section does."""
    sources = [Path(r["source"]) for r in ladder_rungs if r.get("source")]
    for d in [base, *(p.parent for p in sources), *(p.parent.parent for p in sources)]:
        if (d / "capacity").is_dir() or (d / "locality").is_dir():
            return d
    return None


def _rel(p: Path, base: Path) -> str:
    try:
        return str(p.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(p)


def theory_section(report_path: str | Path, ladder_rungs: list[dict[str, Any]], *,
                   estimator: str = "prequential") -> list[str]:
    """The section's markdown lines (figures drawn beside the report); [] when neither folder is found."""
    base = Path(report_path).parent
    studies = _studies_dir(base, ladder_rungs)
    if studies is None:
        return []
    cap, cap_missing = read_folder(studies / "capacity")
    loc, loc_missing = read_folder(_locality_folder(studies))
    if not (cap or loc):  # nothing has run: no section (study files alone change no report)
        return []
    out = ["## Theory: memorizing random labels; locality and symmetry (issue 17)", ""]
    if cap:
        info = capacity_info(cap, ladder_rungs, estimator)
        out += _capacity_lines(info, str(plot_capacity(info, base / "capacity.png").relative_to(base)))
    if loc:
        info = locality_info(loc)
        out += _locality_lines(info, str(plot_locality(info, base / "locality.png").relative_to(base)))
    # Named from the studies folder, not the report: the same text wherever the report is written.
    missing = [_rel(p, studies) for p in cap_missing + loc_missing]
    if missing:
        out += ["Not run yet (no summary): " + ", ".join(f"`{p}`" for p in missing)
                + "; see `bench/run_studies.py`.", ""]
    return out
