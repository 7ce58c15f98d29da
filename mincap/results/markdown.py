"""The markdown report of the ladder (studies/RESULTS.md): figures, one table row per rung,
machine and budget, a generated comparison, and conclusions written by hand.

`write_report` regenerates the file and keeps a conclusions block already in it (between
`<!-- conclusions:begin -->` and `<!-- conclusions:end -->`), so the tables are always
what the summaries say and the prose survives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mincap.entropy import ESTIMATORS
from mincap.info.ladder_table import read_rows, section_markdown
from mincap.report import fmt_acc, fmt_duration, fmt_target
from mincap.results.ladder import (
    LEARNER,
    MACKAY_FLOAT_BITS,
    estimate_bits,
    machine_description,
    mackay_width,
    report_rows,
    rung_name,
)

__all__ = ["files_table", "replicates_cell", "report_markdown", "rungs_table", "write_report"]

_KEEP = re.compile(r"<!-- conclusions:begin -->.*?<!-- conclusions:end -->", re.S)


def replicates_cell(rep: dict[str, Any] | None) -> str:
    """'2 of 3 (98.9-99.1%, 11,980-12,400 bits)': other seeds of the chosen configuration reaching the target."""
    if not rep or not rep.get("k"):
        return "-"
    accs, bits = rep.get("val_acc") or [], rep.get("artifact_bits") or []
    acc = f"{100 * min(accs):.2f}–{100 * max(accs):.2f}%" if accs else ""
    size = f"{min(bits):,}–{max(bits):,} bits" if bits else ""
    extra = ", ".join(v for v in (acc, size) if v)
    return f"{rep['n_reach']} of {rep['k']}" + (f" ({extra})" if extra else "")


def rungs_table(rows: list[dict[str, Any]]) -> list[str]:
    """The 'Every rung' table, one line per `report_rows` row."""
    head = (*(f"{k} (bits/image)" if k == "asker" else f"{k} (bits)" for k in ESTIMATORS),
            "target", "chosen network", "artifact bits", "two-part code (bits)", "parameters", "val acc",
            "test acc", "other seeds reaching the target (val)", "trials (complete)", "trial time",
            "search wall time", "budget per run")
    align = ["---"] + ["---:"] * (len(ESTIMATORS) + 1) + ["---"] + ["---:"] * 10
    out = ["| " + " | ".join(("dataset", *head)) + " |", "|" + "|".join(align) + "|"]
    for w in rows:
        out.append("| " + " | ".join([
            w["dataset"], *(w["entropy"][k] for k in ESTIMATORS),
            fmt_target(w["target"]), f"`{w['spec']}`" if w["artifact_bits"] is not None else w["spec"],
            f"{w['artifact_bits']:,}" if w["artifact_bits"] is not None else "-",
            f"{w['two_part']:,.0f}" if w.get("two_part") is not None else "-",
            f"{w['n_params']:,}" if w["n_params"] is not None else "-",
            fmt_acc(w["val_acc"]), fmt_acc(w["test_acc"]), replicates_cell(w.get("replicates")),
            f"{w['n_trials']} ({w['complete']})",
            fmt_duration(w["cpu_s"]), fmt_duration(w["wall_s"]), w["budget"],
        ]) + " |")
    return out


def files_table(files: list[dict[str, Any]]) -> list[str]:
    """Networks from files made outside a study that reach a rung's target (placed on the figure as squares)."""
    if not files:
        return []
    out = ["## Networks from files (outside the studies)", "",
           "Each file was written by a documented command (`mincap train`, or `mincap export --side` of a study's "
           "trial: column 'made by') and checked by `mincap verify` on the "
           "rung's validation split; it reaches the rung's target there, so it is placed on the figure beside "
           "the study's choice, marked as a file.", "",
           "| file | made by | dataset | target | artifact bits | two-part code (bits) | parameters | val acc | test acc |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for f in files:
        tp = f"{f['two_part']:,.0f}" if f.get("two_part") is not None else "-"
        n = f"{f['n_params']:,}" if f.get("n_params") is not None else "-"
        out.append(f"| `{f.get('path') or f['file']}` | `{f.get('made_by', 'mincap train')}` | {f['dataset']} | {fmt_target(f['target'])} | {int(f['y']):,} | "
                   f"{tp} | {n} | {fmt_acc(f['val_acc'])} | {fmt_acc(f['test_acc'])} |")
    return out + [""]


def _comparison(rungs: list[dict[str, Any]], estimator: str) -> list[str]:
    lines = []
    for r in rungs:
        c = r.get("chosen")
        if not c:
            lines.append(f"- **{rung_name(r)}**: no network reached {fmt_target(r['target'])} on validation.")
            continue
        b = c["artifact_bits"]
        bits = []
        for name in dict.fromkeys(("labels", "prequential", estimator)):
            v = estimate_bits((r.get("entropy") or {}).get(name))
            if v:
                bits.append(f"{b / v:.3g}× the {name} figure ({v:,.0f} bits)")
        mack = ""
        if c.get("n_params"):
            mack = (f"; its {c['n_params']:,} parameters at {MACKAY_FLOAT_BITS}-bit floats would be "
                    f"{c['n_params'] * MACKAY_FLOAT_BITS:,} bits")
        lines.append(f"- **{rung_name(r)}** (target {fmt_target(r['target'])}): {b:,} bits"
                     + (", " + ", ".join(bits) if bits else "") + mack + ".")
    return lines


def _info_section(rungs: list[dict[str, Any]], base: Path) -> list[str]:
    """The information columns of the chosen networks (issue 18), when `mincap info --ladder` has
    stored them in `info/ladder.json` of the studies folder (beside the report, or one or two
    levels above a summary); nothing otherwise."""
    sources = [Path(r["source"]) for r in rungs if r.get("source")]
    for d in [base, *(p.parent for p in sources), *(p.parent.parent for p in sources)]:
        rows = read_rows(d / "info" / "ladder.json")
        if rows is not None:
            stored = json.loads((d / "info" / "ladder.json").read_text())
            return ["## Information inside the chosen networks", "",
                    "Mutual information per layer of each chosen network; the estimators and their limits "
                    "are described in `studies/info/README.md`.", "",
                    section_markdown(rows, bins=stored["bins"], noise_var=stored["noise_var"],
                                     command=stored["command"]), ""]
    return []


def report_markdown(rungs: list[dict[str, Any]], *, figure: str | Path, pareto: str | Path | None = None,
                    report_path: str | Path | None = None, estimator: str = "prequential",
                    machine: str | None = None, command: str = "mincap plot", conclusions: str | None = None,
                    files: list[dict[str, Any]] | None = None, extra: list[str] | None = None) -> str:
    """The markdown report: figures, one table row per rung, machine and budget, comparison, conclusions.

    `extra`: more sections' lines, placed before the conclusions (issue 17's: `mincap.results.theory`)."""
    base = Path(report_path).parent if report_path else Path(".")

    def rel(p) -> str:
        p = Path(p)
        try:
            return str(p.resolve().relative_to(base.resolve()))
        except ValueError:
            return str(p)

    # A summary resumed on another machine build records "a; b": list each machine once.
    machines = sorted({m for r in rungs if r.get("machine") for m in r["machine"].split("; ")})
    if machine:
        machine_txt = machine
    elif machines:
        machine_txt = "; ".join(machines) + " (recorded when the summaries were written)"
    else:
        machine_txt = f"not recorded in the summaries; this report was written on {machine_description()}"
    rows = report_rows(rungs)
    budgets = sorted({w["budget"] for w in rows if w["budget"] != "-"})
    lines = [
        "# Results: information in the dataset vs the smallest network",
        "",
        f"Generated by `{command}` from the study summaries "
        f"({', '.join('`' + rel(r['source']) + '`' for r in rungs if r.get('source'))}); "
        "regenerate instead of editing the tables.",
        "",
        f"![{estimator} estimate vs smallest network]({rel(figure)})",
        "",
    ]
    if pareto:
        lines += [f"![Pareto fronts]({rel(pareto)})", ""]
    lines += [
        f"- **Machine**: {machine_txt}.",
        f"- **Budget** per rung: {', '.join(budgets) if budgets else 'not recorded'} "
        "(`[budget]` of each study file, per `mincap search` run); trial time below is the sum of the "
        "trials' durations, search wall time the time during which at least one trial was running, "
        "over all runs and workers.",
        "- **Chosen network**: the smallest `.mincap` artifact whose validation accuracy reaches the "
        "target; its test accuracy is reported, never used to choose.",
        "- **Entropy columns** (`mincap entropy`, official training part): `asker` is bits per image "
        "(the learner's computation, not an entropy); the others are bits for the whole training set, "
        "each an upper bound on what it estimates (a better model or compressor gives a smaller figure).",
        "- **Both axes of the figure are upper bounds**: the chosen network is the smallest *found*; the "
        "smallest that exists may be smaller.",
        "- **Two-part code**: the chosen network's file bits plus the official training labels coded with the "
        "decoded network (`mincap.evaluation.twopart`): a real code length for the labels given the images, like the "
        "prequential codes.",
        "",
        "## Every rung",
        "",
        *rungs_table(rows),
        "",
        *files_table(files or []),
        *_info_section(rungs, base),
        f"## Comparison (generated; X of the plot: `{estimator}`)",
        "",
        *_comparison(rungs, estimator),
        "",
        f"The learner's reading of MacKay's rule: 191 bits / 2 = {LEARNER['weights']} weights; at "
        f"{MACKAY_FLOAT_BITS}-bit floats, {LEARNER['bits']:,} bits (the purple line of the plot). The rule in "
        f"the plot's units (orange line): X bits need X / 2 weights, at the placed files' weight width of "
        f"{_width(rungs, files)} bits, (X / 2) × {_width(rungs, files)} bits.",
        "",
        *(extra or []),
        "## Conclusions",
        "",
        conclusions or "<!-- conclusions:begin -->\n_To be written from the results above._\n<!-- conclusions:end -->",
        "",
    ]
    return "\n".join(lines)


def _width(rungs: list[dict[str, Any]], files) -> int:
    """The MacKay line's weight width, as the figure computes it from the placed networks."""
    return mackay_width([r["chosen"] for r in rungs if r.get("chosen")] + list(files or []))


def write_report(rungs: list[dict[str, Any]], report_path: str | Path, **kw) -> Path:
    """Write the report; a conclusions block already in the file (between its markers) is kept."""
    p = Path(report_path)
    keep = None
    if p.is_file():
        m = _KEEP.search(p.read_text())
        keep = m.group(0) if m else None
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(report_markdown(rungs, report_path=p, conclusions=keep, **kw))
    return p
