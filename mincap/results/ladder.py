"""The data behind the ladder figures and the report, with no drawing.

A *rung* is one study's summary: the dict `mincap summary --json` prints
(`mincap.results.summary.summarize`), read either live from a study file (`.toml`,
which may evaluate the chosen network's test accuracy once) or from a committed JSON
file (`studies/ladder/<name>.summary.json`), so that the figures and the report
regenerate from committed files alone. A study read live starts from its stored summary
(`mincap.results.stored`): what the live computation lacks (the entropy cache of a fresh
clone is empty) is taken from it, and `save_summaries` rewrites it with nothing lost.
`load_rungs` only loads; `entropy_x` finds (or, for cheap estimators, computes) each
rung's entropy estimate, the X of figure 1.

Each placed point carries what the figure draws beside it: the two-part code of its network
(`chosen.two_part`), the rung's prequential codes, and its replicates (the chosen configuration
retrained with other seeds, `mincap summary --replicates`). Files made outside a study
(`mincap.results.artifacts`) are placed beside the rungs, marked as files.

`ladder_info` and `pareto_info` extract what the figures show (Optuna keeps
`_get_pareto_front_info` apart from drawing the same way); `mincap.results.figures`
draws them, `mincap.results.markdown` writes `report_rows` as a table.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from pathlib import Path
from typing import Any, NamedTuple

from mincap import entropy
from mincap.config.study import load_study_file
from mincap.data.variants import LADDER
from mincap.entropy import PREQUENTIAL_ESTIMATORS
from mincap.entropy import cache as entropy_cache
from mincap.errors import MincapError
from mincap.report import fmt_acc, fmt_duration, fmt_target, spec_short
from mincap.results.artifacts import place_artifacts
from mincap.results.stored import (
    config_of,
    load_summary,
    merge,
    read_summary,
    search_time_s,
    summary_path,
    supernet_time_s,
    write_summary,
)
from mincap.results.summary import chosen_trial, summarize
from mincap.search.storage import artifact_bytes, open_study

__all__ = [
    "ANCHORS",
    "CHEAP_ESTIMATORS",
    "LEARNER",
    "MACKAY_FLOAT_BITS",
    "MACKAY_WIDTH_BITS",
    "LadderInfo",
    "ParetoInfo",
    "cpu_time_s",
    "entropy_x",
    "estimate_bits",
    "ladder_info",
    "load_rungs",
    "machine_description",
    "mackay_width",
    "pareto_info",
    "report_rows",
    "rung_name",
    "save_summaries",
]

# Estimators cheap and deterministic enough to compute when a summary lacks them (< a few s).
CHEAP_ESTIMATORS = ("asker", "pixels", "labels")
# MacKay's ~2 bits of capacity per weight, used as the learner did: bits / 2 = weights
# needed; each weight stored as a 32-bit float (the learner's point only).
MACKAY_FLOAT_BITS = 32
# The rule drawn in the axes' units: X bits need X / 2 weights, at w bits each (X / 2) * w bits.
# w is the weight width of the placed networks' files (`mackay_width`); 4 bits when none is known.
MACKAY_WIDTH_BITS = 4
# The learner: 191 "bits of entropy" -> ~95 units; read as 95 float32 weights.
LEARNER = {"entropy_bits": 191.0, "weights": 95, "bits": 95 * MACKAY_FLOAT_BITS}
# Published sizes of MNIST classifiers at >= 99% test accuracy (bits).
ANCHORS = (
    ("MIRACLE (Havasi et al. 2019)", 12_200),
    ("BitNetMCU", 42_880),
    ("1,936 float32 params", 1_936 * 32),
)


# --- loading -------------------------------------------------------------------------------


def machine_description() -> str:
    """One line naming the current machine: CPU model, cores, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def _ladder_order(p: Path) -> tuple[int, str]:
    """Summary files in ladder order (LADDER), others after, by name."""
    stem = p.name.removesuffix(".summary.json")
    return (LADDER.index(stem) if stem in LADDER else len(LADDER), stem)


def _summarize_file(p: Path, *, data_dir, evaluate_test: bool) -> dict[str, Any]:
    """A study file's summary: live from its database, merged into its stored summary if any.

    The stored summary's values stand where the live computation has none (a fresh clone's
    entropy cache is empty; `--no-test`); a test accuracy stored for the same chosen
    network is reused, not measured again. See `mincap.results.stored`.
    """
    cfg = load_study_file(p)
    db = cfg.folder / f"{cfg.study.name}.db"
    if not cfg.storage.url and not db.is_file():  # do not leave an empty database behind
        raise MincapError(f"{p}: study {cfg.study.name!r} has not run yet (no {db}); run: mincap search {p}")
    out = summary_path(p)
    old = load_summary(out) if out.is_file() else None
    study = open_study(cfg, create=False)
    best = chosen_trial(study, cfg.study.target)
    old_c = (old or {}).get("chosen") or {}
    known = (best is not None and old_c.get("test_acc") is not None
             and (old_c.get("trial"), old_c.get("artifact_bits")) == (best.number, best.user_attrs["artifact_bits"]))
    s = summarize(study, target=cfg.study.target, dataset=cfg.study.dataset,
                  read_artifact=functools.partial(artifact_bytes, cfg), data_dir=data_dir,
                  evaluate_test=evaluate_test and not known)
    s["config"] = config_of(cfg, str(p))
    s["machine"] = machine_description()
    return merge(old, s, path=out) if old is not None else s


def load_rungs(inputs: list[str], from_json: list[str] | None = None, *, data_dir=None,
               evaluate_test: bool = True) -> list[dict[str, Any]]:
    """Summaries of the studies: `.toml` files are summarized live, `.json` files read as they are.

    Each rung is the summary dict plus `source` and, where known, `config` (target,
    n_val, budget of the study file). A study read live is merged into its stored
    `<stem>.summary.json`, or refused with one line if that would lose a stored value.
    """
    paths = [Path(p) for p in inputs]
    for d in from_json or []:
        found = sorted(Path(d).glob("*.summary.json"), key=_ladder_order)
        if not found:
            raise MincapError(f"--from-json {d}: no *.summary.json files there")
        paths += found
    if not paths:
        raise MincapError("mincap plot: no studies given (study files, summary JSON files or --from-json DIR)")
    rungs = []
    for p in paths:
        if not p.is_file():
            raise MincapError(f"{p}: no such file")
        s = read_summary(p) if p.suffix == ".json" else _summarize_file(p, data_dir=data_dir,
                                                                          evaluate_test=evaluate_test)
        s["source"] = str(p)
        rungs.append(s)
    return rungs


def save_summaries(rungs: list[dict[str, Any]]) -> list[Path]:
    """Write `<stem>.summary.json` beside each study file read live (merged: nothing stored is lost)."""
    return [write_summary(summary_path(r["source"]), r) for r in rungs if not r["source"].endswith(".json")]


# --- entropy (X) ---------------------------------------------------------------------------


def estimate_bits(e: dict[str, Any] | None) -> float | None:
    """An estimate's bits: for the whole training set where defined, else per example (asker)."""
    if not e:
        return None
    return e.get("bits_total") if e.get("bits_total") is not None else e.get("bits_per_example")


def entropy_x(rung: dict[str, Any], estimator: str, *, data_dir=None, compute: bool = True) -> float | None:
    """The X value of a rung: its `estimator` figure (bits_total where defined, else bits per example).

    Looked up in the summary, then in `mincap entropy`'s cache, then (cheap estimators
    only, `compute`) computed. Found values are added to `rung["entropy"]`.
    """
    ent = rung.setdefault("entropy", {}) or {}
    rung["entropy"] = ent
    e = ent.get(estimator)
    if e is None:
        e = entropy_cache.newest(rung["dataset"], data_dir).get(estimator)
        if e is None and compute and estimator in CHEAP_ESTIMATORS:
            try:
                est = entropy.estimate(rung["dataset"], estimator, root=data_dir)
            except MincapError:
                return None
            e = {"bits_per_example": est.bits_per_example, "bits_total": est.bits_total}
        if e is None:
            return None
        ent[estimator] = e
    v = estimate_bits(e)
    return None if v is None else float(v)


# --- figure data ---------------------------------------------------------------------------


def rung_name(rung: dict[str, Any]) -> str:
    return rung.get("dataset") or rung.get("study", "?")


class LadderInfo(NamedTuple):
    """What figure 1 shows: placed points, skipped rungs and why, MNIST's X, axis limits."""

    points: list[dict[str, Any]]  # dataset, x, y (artifact bits), target, test_acc, n_params, preq, codes, ...
    skipped: dict[str, str]
    mnist_x: float | None  # where the published MNIST sizes sit; None: drawn as lines
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    files: list[dict[str, Any]] = []  # networks from files (`mincap.results.artifacts`), with their x
    mackay_width: int = MACKAY_WIDTH_BITS  # bits per weight the MacKay line assumes


def mackay_width(points: list[dict[str, Any]]) -> int:
    """The weight width of the placed networks' files: the median of their layers' bit widths.

    (`bits_per_layer` of a chosen network, `layers[].bits` of a verify record); MACKAY_WIDTH_BITS
    when none records it.
    """
    w = sorted(b for p in points for b in (p.get("bits_per_layer") or [la["bits"] for la in p.get("layers") or []]))
    return w[len(w) // 2] if w else MACKAY_WIDTH_BITS


def _replicates(c: dict[str, Any]) -> dict[str, Any] | None:
    """The chosen network's replicates as the figure shows them: how many reach, the range of their bits."""
    r = c.get("replicates")
    if not r or not r.get("k"):
        return None
    bits = [float(b) for b in r.get("artifact_bits") or []]
    return {"k": r["k"], "n_reach": r["n_reach"], "val_acc": r.get("val_acc") or [],
            "bits_lo": min(bits, default=None), "bits_hi": max(bits, default=None)}


def _point(r: dict[str, Any], x: float) -> dict[str, Any]:
    c, ent = r["chosen"], r.get("entropy") or {}
    codes = {k: estimate_bits(ent.get(k)) for k in PREQUENTIAL_ESTIMATORS if estimate_bits(ent.get(k))}
    return {"dataset": rung_name(r), "x": x, "y": float(c["artifact_bits"]), "target": r["target"],
            "test_acc": c.get("test_acc"), "n_params": c.get("n_params"), "bits_per_layer": c.get("bits_per_layer"),
            "preq": (ent.get("prequential") or {}).get("bits_total"), "codes": codes,
            "two_part": (c.get("two_part") or {}).get("total_bits"), "replicates": _replicates(c)}


def _searched(rung: dict[str, Any]) -> str:
    """What the search of an unplaced rung did, as measured: ' (best 98.60% validation, 12 networks
    trained in 1.00 h)'; '' where the summary does not say."""
    front = rung.get("pareto_front") or []
    if not front:
        return ""
    best = max(row["val_acc"] for row in front)
    n = ((rung.get("states") or {}).get("COMPLETE") or {}).get("trials")
    wall = search_time_s(rung)
    trained = f", {n} networks trained" if n is not None else ""
    return f" (best {fmt_acc(best)} validation{trained}{f' in {fmt_duration(wall)}' if wall else ''})"


def ladder_info(rungs: list[dict[str, Any]], estimator: str, *, data_dir=None, compute: bool = True,
                artifacts: list[dict[str, Any]] | None = None) -> LadderInfo:
    """Figure 1's data: each rung with a chosen network and an estimate is a point (X, artifact bits).

    `artifacts`: verify records (`mincap.results.artifacts.load_artifacts`) placed beside the
    rungs when they reach a rung's target on its validation split; the others are skipped with why.
    """
    points, skipped = [], {}
    for r in rungs:
        x = entropy_x(r, estimator, data_dir=data_dir, compute=compute)
        c = r.get("chosen")
        if c is None:
            skipped[rung_name(r)] = f"no network reached {fmt_target(r['target'])}{_searched(r)}"
        elif x is None:
            skipped[rung_name(r)] = f"no {estimator} estimate"
        else:
            points.append(_point(r, x))
    files, file_skipped = place_artifacts(artifacts or [], rungs)
    for f in files:
        rung = next(r for r in rungs if r.get("dataset") == f["dataset"])
        f["x"] = entropy_x(rung, estimator, data_dir=data_dir, compute=compute)
        if f["x"] is None:
            file_skipped[f["file"]] = f"no {estimator} estimate"
    files = [f for f in files if f["x"] is not None]
    skipped.update(file_skipped)
    mnist_x = next((p["x"] for p in points if p["dataset"] == "mnist"), None)
    if mnist_x is None:
        mnist_r = next((r for r in rungs if r.get("dataset") == "mnist"), {"dataset": "mnist", "entropy": {}})
        mnist_x = entropy_x(dict(mnist_r), estimator, data_dir=data_dir, compute=compute)

    xs = [p["x"] for p in points] + [f["x"] for f in files] + ([mnist_x] if mnist_x else [])
    ys = [p["y"] for p in points] + [f["y"] for f in files] + [b for _, b in ANCHORS] + [LEARNER["bits"]]
    ys += [v for p in points for v in p["codes"].values()] + [p["two_part"] for p in points if p["two_part"]]
    ys += [f["two_part"] for f in files if f["two_part"]]
    ys += [v for p in points if p["replicates"] for v in (p["replicates"]["bits_lo"], p["replicates"]["bits_hi"]) if v]
    if estimator == "asker":
        xs.append(LEARNER["entropy_bits"])
    # Room on the right for the labels of the largest rung (MNIST's cluster of points, files, anchors).
    x_lo, x_hi = (min(xs) / 4, max(xs) * 12) if xs else (1e2, 1e6)
    y_lo, y_hi = min(ys) / 3, max(ys) * 4
    if x_hi / x_lo < 100:
        mid = math.sqrt(x_lo * x_hi)
        x_lo, x_hi = mid / 10, mid * 10
    return LadderInfo(points, skipped, mnist_x, (x_lo, x_hi), (y_lo, y_hi), files, mackay_width(points + files))


class ParetoInfo(NamedTuple):
    """What one panel of figure 2 shows: a study's Pareto front against its target."""

    name: str
    target: float
    front: list[tuple[float, float]]  # (artifact bits, validation accuracy), smallest first
    reached: list[tuple[float, float]]  # the front's points at or above the target
    missed: list[tuple[float, float]]  # ... and below it
    ylim: tuple[float, float]
    chosen: dict[str, Any] | None


def pareto_info(rung: dict[str, Any]) -> ParetoInfo:
    """Figure 2's data for one rung: its front split at the target, the y range, the chosen network."""
    front = [(f["artifact_bits"], f["val_acc"]) for f in rung.get("pareto_front") or []]
    target = rung["target"]
    if front:
        accs = [a for _, a in front]
        lo = max(min(min(accs), target), target - 0.06)  # the target line always in view
        hi = min(1.0, max(max(accs), target) + 0.01)
        ylim = (lo - 0.005, hi + 0.002)
    else:
        ylim = (target - 0.05, 1.0)
    return ParetoInfo(rung_name(rung), target, front, [f for f in front if f[1] >= target],
                      [f for f in front if f[1] < target], ylim, rung.get("chosen") or None)


# --- report data ---------------------------------------------------------------------------


def cpu_time_s(rung: dict[str, Any]) -> float:
    """Sum of the trials' durations, all states (wall time per trial), and a one-shot study's supernet
    training."""
    return float(sum(v.get("time_s", 0.0) for v in (rung.get("states") or {}).values())) + supernet_time_s(rung)


def _entropy_cell(rung: dict[str, Any], name: str) -> str:
    v = estimate_bits((rung.get("entropy") or {}).get(name))
    if v is None:
        return "-"
    return f"{v:,.1f}" if name == "asker" else f"{v:,.0f}"


def report_rows(rungs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per rung, as plain data (what the markdown table shows); entropy cells per estimator."""
    rows = []
    for r in rungs:
        c = r.get("chosen") or {}
        cfg = r.get("config") or {}
        states = r.get("states") or {}
        row = {
            "dataset": rung_name(r), "study": r.get("study"), "target": r["target"],
            "entropy": {k: _entropy_cell(r, k) for k in entropy.ESTIMATORS},
            "spec": spec_short(c.get("spec"), c.get("bits_per_layer")) if c else "none reached the target",
            "artifact_bits": c.get("artifact_bits"), "n_params": c.get("n_params"),
            "val_acc": c.get("val_acc"), "test_acc": c.get("test_acc"), "n_trials": r.get("n_trials"),
            "complete": (states.get("COMPLETE") or {}).get("trials", 0), "cpu_s": cpu_time_s(r),
            "wall_s": search_time_s(r),
            "budget": (f"{cfg['budget_trials']} trials / "
                       + (fmt_duration(cfg["budget_timeout_s"]) if cfg.get("budget_timeout_s") else "no time limit")
                       if cfg.get("budget_trials") is not None else "-"),
            "n_val": cfg.get("n_val"),
            "two_part": (c.get("two_part") or {}).get("total_bits"), "replicates": c.get("replicates"),
        }
        rows.append(row)
    return rows
