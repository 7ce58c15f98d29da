"""The ladder plot: information in each dataset (X) against its smallest verified network (Y).

Input: one summary per study, the dict `mincap summary --json` prints
(`mincap.summary.summarize`), read either live from a study file (`.toml`) or from
a committed JSON file (`studies/ladder/<name>.summary.json`), so the figures and
the report regenerate from committed files alone.

Figure 1 (`-o FILE.png`): for each study, X = one entropy estimate of its dataset
(`--estimator`; bits for the whole training set where defined, else bits per
image), Y = the artifact bits of its chosen network (smallest trial whose
*validation* accuracy reaches the target), both log scale, each point labelled
with the dataset, its bits, the target and the test accuracy. Reference lines:
y = x; MacKay's 2 bits per weight as the learner used it (X / 2 weights stored as
32-bit floats: y = 16 x); the learner's MNIST prediction (191 bits -> 95 weights
x 32 bits = 3,040 bits); each dataset's prequential code length of its labels
where computed; published MNIST >= 99% sizes.

Figure 2 (`FILE-pareto.png`): each study's Pareto front, artifact bits against
validation accuracy, with the target line and the chosen network marked.

`write_report` writes the markdown table of every rung (studies/RESULTS.md).
"""

from __future__ import annotations

import json
import math
import platform
import re
from pathlib import Path
from typing import Any

from mincap.errors import MincapError

__all__ = [
    "ANCHORS",
    "CHEAP_ESTIMATORS",
    "LEARNER",
    "MACKAY_FLOAT_BITS",
    "entropy_x",
    "load_rungs",
    "pareto_path",
    "plot_ladder",
    "plot_pareto",
    "report_markdown",
    "spec_short",
    "write_report",
]

# Estimators cheap and deterministic enough to compute when a summary lacks them (< a few s).
CHEAP_ESTIMATORS = ("asker", "pixels", "labels")
# MacKay's ~2 bits of capacity per weight, used as the learner did: bits / 2 = weights
# needed; each weight stored as a 32-bit float.
MACKAY_FLOAT_BITS = 32
# The learner: 191 "bits of entropy" -> ~95 units; read as 95 float32 weights.
LEARNER = {"entropy_bits": 191.0, "weights": 95, "bits": 95 * MACKAY_FLOAT_BITS}
# Published sizes of MNIST classifiers at >= 99% test accuracy (bits).
ANCHORS = (
    ("MIRACLE (Havasi et al. 2019)", 12_200),
    ("BitNetMCU", 42_880),
    ("1,936 float32 params", 1_936 * 32),
)

# Reference colours (grey y = x and anchors, orange MacKay, purple learner, dark green
# prequential); the rungs take the others.
PREQ_COLOR = "darkgreen"
RUNG_COLORS = ("tab:blue", "tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "navy",
               "darkgoldenrod", "crimson", "teal", "slateblue", "black")

X_LABELS = {
    "asker": "the learner's 'entropy': Σ −p_i log2 p_i over pixels, bits per image (not an entropy)",
    "pixels": "Σ H2(p_i) over binarized pixels × images: bits, whole training set",
    "compressed": "best compressed size of the training images: bits",
    "labels": "H(Y) × images: the training labels sent with no model, bits",
    "prequential": "prequential code length of the training labels given the images: bits",
}


# --- input ---------------------------------------------------------------------------------


def _config_of(cfg, source: str) -> dict[str, Any]:
    return {
        "file": source, "target": cfg.study.target, "n_val": cfg.data.n_val,
        "budget_trials": cfg.budget.trials, "budget_timeout_s": cfg.budget.timeout_s,
    }


def _sibling_config(json_path: Path) -> dict[str, Any] | None:
    """The study file beside a summary JSON (`X.summary.json` -> `X.toml`), if any."""
    from mincap.study import load_study_file

    stem = json_path.name.removesuffix(".json").removesuffix(".summary")
    toml = json_path.with_name(stem + ".toml")
    if not toml.is_file():
        return None
    try:
        return _config_of(load_study_file(toml), str(toml))
    except MincapError:
        return None


def machine_description() -> str:
    """One line naming the current machine: CPU model, cores, OS."""
    import os

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
    """Summary files in ladder order (mincap.variants.LADDER), others after, by name."""
    from mincap.variants import LADDER

    stem = p.name.removesuffix(".summary.json")
    return (LADDER.index(stem) if stem in LADDER else len(LADDER), stem)


def load_rungs(inputs: list[str], from_json: list[str] | None = None, *, data_dir=None,
               evaluate_test: bool = True, save_json: bool = False) -> list[dict[str, Any]]:
    """Summaries of the studies: `.toml` files are summarized live, `.json` files read as they are.

    Each rung is the `summarize` dict plus `source` and, where known, `config`
    (target, n_val, budget of the study file). `save_json` writes `<stem>.summary.json`
    beside each study file read live.
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
        if p.suffix == ".json":
            try:
                s = json.loads(p.read_text())
            except ValueError as err:
                raise MincapError(f"{p}: not valid JSON ({err})") from None
            if not isinstance(s, dict) or not {"dataset", "target", "chosen"} <= set(s):
                raise MincapError(f"{p}: not a summary (expected the output of `mincap summary --json`)")
            s.setdefault("config", _sibling_config(p))
        else:
            from mincap.search import open_study
            from mincap.study import load_study_file
            from mincap.summary import summarize

            cfg = load_study_file(p)
            db = cfg.folder / f"{cfg.study.name}.db"
            if not cfg.storage.url and not db.is_file():  # do not leave an empty database behind
                raise MincapError(f"{p}: study {cfg.study.name!r} has not run yet (no {db}); "
                                  f"run: mincap search {p}")
            study = open_study(cfg, create=False)
            s = summarize(study, target=cfg.study.target, dataset=cfg.study.dataset,
                          artifacts_dir=cfg.artifacts_dir, data_dir=data_dir, evaluate_test=evaluate_test)
            s["config"] = _config_of(cfg, str(p))
            s["machine"] = machine_description()
            if save_json:
                out = p.with_name(p.stem + ".summary.json")
                out.write_text(json.dumps(s, indent=1, sort_keys=True) + "\n")
        s["source"] = str(p)
        rungs.append(s)
    return rungs


def entropy_x(rung: dict[str, Any], estimator: str, *, data_dir=None, compute: bool = True) -> float | None:
    """The X value of a rung: its `estimator` figure (bits_total where defined, else bits per example).

    Looked up in the summary, then in `mincap entropy`'s cache, then (cheap estimators
    only, `compute`) computed. Found values are added to `rung["entropy"]`.
    """
    ent = rung.setdefault("entropy", {}) or {}
    rung["entropy"] = ent
    e = ent.get(estimator)
    if e is None:
        from mincap.summary import cached_entropy

        e = cached_entropy(rung["dataset"], data_dir=data_dir).get(estimator)
        if e is None and compute and estimator in CHEAP_ESTIMATORS:
            from mincap import entropy

            try:
                est = entropy.estimate(rung["dataset"], estimator, root=data_dir)
            except MincapError:
                return None
            e = {"bits_per_example": est.bits_per_example, "bits_total": est.bits_total}
        if e is None:
            return None
        ent[estimator] = e
    v = e.get("bits_total") if e.get("bits_total") is not None else e.get("bits_per_example")
    return None if v is None else float(v)


# --- formatting ----------------------------------------------------------------------------


def _pct(acc: float | None, digits: int = 2) -> str:
    return "-" if acc is None else f"{100 * acc:.{digits}f}%"


def _target_txt(t: float) -> str:
    s = f"{100 * t:.2f}".rstrip("0").rstrip(".")
    return f"{s}%"


def _bits_txt(b: float | None) -> str:
    if b is None:
        return "-"
    if b >= 1e6:
        return f"{b / 1e6:.3g} Mbit"
    if b >= 1e4:
        return f"{b / 1e3:.3g} kbit"
    return f"{b:,.0f} bits"


def spec_short(spec_json: str | None, bits_per_layer=None) -> str:
    """A compact spec: conv blocks as channels x kernel (/p2 = 2x2 pool), head, hidden, bits per layer."""
    if not spec_json:
        return "-"
    try:
        d = json.loads(spec_json)
    except ValueError:
        return spec_json
    parts = []
    convs = d.get("convs") or []
    if convs:
        parts.append("conv " + " ".join(
            f"{c[0]}x{c[1]}" + (f"s{c[2]}" if c[2] != 1 else "") + (f"/p{c[3]}" if c[3] > 1 else "")
            for c in convs))
    if d.get("family") == "cnn" and convs:
        parts.append(d.get("head", "flatten"))
    if d.get("hidden"):
        parts.append("fc " + "-".join(map(str, d["hidden"])))
    if d.get("batch_norm"):
        parts.append("bn")
    text = ", ".join(parts) or d.get("family", "?")
    if bits_per_layer:
        text += f"; bits {'/'.join(map(str, bits_per_layer))}"
    return text


def _duration_txt(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.0f} s"


def cpu_time_s(rung: dict[str, Any]) -> float:
    """Sum of the trials' durations, all states (wall time per trial)."""
    return float(sum(v.get("time_s", 0.0) for v in (rung.get("states") or {}).values()))


def _name(rung: dict[str, Any]) -> str:
    return rung.get("dataset") or rung.get("study", "?")


def pareto_path(output: str | Path) -> Path:
    """Where the second figure goes: FILE.png -> FILE-pareto.png."""
    p = Path(output)
    return p.with_name(f"{p.stem}-pareto{p.suffix}")


# --- figure 1 ------------------------------------------------------------------------------


def _place_labels(fig, ax, items, fontsize=8) -> None:
    """Label points directly, nudging labels vertically so that none overlaps another.

    `items`: (x, y, text, color, side) with side +1 (right of the point) or -1 (left).
    Greedy: labels are placed in order of their point's height; each tries vertical
    offsets 0, -1, +1, -2, ... half line heights until its box clears the labels placed
    before and every point; a moved label gets a thin leader line to its point.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    pts = [tuple(ax.transData.transform((x, y))) for x, y, *_ in items]
    to_pt = 72.0 / fig.dpi
    for (x, y, text, color, side), _pt in sorted(zip(items, pts), key=lambda it: it[1][1]):
        ha = "left" if side > 0 else "right"
        kw = {"textcoords": "offset points", "ha": ha, "va": "center", "fontsize": fontsize, "color": color}
        t = ax.annotate(text, (x, y), xytext=(7 * side, 0), **kw)
        step = t.get_window_extent(renderer).height * 0.5
        dy = 0.0
        for k in range(60):
            dy = ((k + 1) // 2) * (1 if k % 2 == 0 else -1) * step if k else 0.0
            t.set_position((7 * side, dy * to_pt))
            bb = t.get_window_extent(renderer).padded(2)
            if not any(bb.overlaps(o) for o in placed) and not any(bb.contains(px, py) for px, py in pts):
                break
        if dy:
            t.remove()
            t = ax.annotate(text, (x, y), xytext=(7 * side, dy * to_pt), **kw,
                            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5, "shrinkA": 0, "shrinkB": 4})
        placed.append(t.get_window_extent(renderer).padded(2))


def _line_label(fig, ax, factor: float, texts: tuple[str, ...], color, avoid_pts) -> None:
    """Label the line y = factor * x along itself, inside the axes, clear of every text and point.

    Among positions along the line whose label box stays inside the axes and overlaps no
    other text, the one farthest from the points is taken; none fitting, the next (shorter)
    text is tried.
    """
    import numpy as np

    renderer = fig.canvas.get_renderer()
    (x_lo, x_hi), (y_lo, y_hi) = ax.get_xlim(), ax.get_ylim()
    cand = [v for v in np.geomspace(x_lo, x_hi, 50) if y_lo < factor * v < y_hi]
    if not cand:
        return
    others = [t.get_window_extent(renderer) for t in ax.texts if t.get_visible()]
    box = ax.get_window_extent(renderer)
    pts = [ax.transData.transform(a) for a in avoid_pts]

    def far(v) -> float:
        d = ax.transData.transform((v, factor * v))
        return min((float(np.hypot(*(d - q))) for q in pts), default=1e9)

    p1, p2 = ax.transData.transform([(x_lo, factor * x_lo), (x_hi, factor * x_hi)])
    ang = math.degrees(math.atan2(p2[1] - p1[1], p2[0] - p1[0]))
    order = sorted(cand, key=far, reverse=True)
    for text in texts:
        for v in order:
            t = ax.annotate(text, (v, factor * v), xytext=(0, 3), textcoords="offset points", color=color,
                            fontsize=7.5, rotation=ang, rotation_mode="anchor", ha="left", va="bottom")
            bb = t.get_window_extent(renderer)
            inside = box.x0 <= bb.x0 and bb.x1 <= box.x1 and box.y0 <= bb.y0 and bb.y1 <= box.y1
            if inside and not any(bb.overlaps(o) for o in others):
                return
            t.remove()


def plot_ladder(rungs: list[dict[str, Any]], output: str | Path, *, estimator: str = "prequential",
                data_dir=None, compute: bool = True) -> dict[str, Any]:
    """Figure 1: entropy estimate (X) vs artifact bits of the chosen network (Y), log-log.

    Returns what was drawn: {"points": [...], "skipped": {dataset: reason}}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, skipped = [], {}
    for r in rungs:
        x = entropy_x(r, estimator, data_dir=data_dir, compute=compute)
        c = r.get("chosen")
        if c is None:
            skipped[_name(r)] = f"no network reached {_target_txt(r['target'])}"
        elif x is None:
            skipped[_name(r)] = f"no {estimator} estimate"
        else:
            points.append({"dataset": _name(r), "x": x, "y": float(c["artifact_bits"]), "target": r["target"],
                           "test_acc": c.get("test_acc"), "n_params": c.get("n_params"),
                           "preq": ((r.get("entropy") or {}).get("prequential") or {}).get("bits_total")})
    mnist_x = next((p["x"] for p in points if p["dataset"] == "mnist"), None)
    if mnist_x is None:
        mnist_r = next((r for r in rungs if r.get("dataset") == "mnist"), {"dataset": "mnist", "entropy": {}})
        mnist_x = entropy_x(dict(mnist_r), estimator, data_dir=data_dir, compute=compute)

    xs = [p["x"] for p in points] + ([mnist_x] if mnist_x else [])
    ys = [p["y"] for p in points] + [b for _, b in ANCHORS] + [LEARNER["bits"]]
    ys += [p["preq"] for p in points if p["preq"]]
    if estimator == "asker":
        xs.append(LEARNER["entropy_bits"])
    x_lo, x_hi = (min(xs) / 4, max(xs) * 4) if xs else (1e2, 1e6)
    y_lo, y_hi = min(ys) / 3, max(ys) * 3
    if x_hi / x_lo < 100:
        mid = math.sqrt(x_lo * x_hi)
        x_lo, x_hi = mid / 10, mid * 10

    fig, ax = plt.subplots(figsize=(10, 7), dpi=110)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.grid(True, which="major", color="0.9", lw=0.6)
    ax.set_axisbelow(True)

    # Reference lines, labelled on the line.
    gx = [x_lo, x_hi]
    ax.plot(gx, gx, color="0.55", lw=1, ls="--", zorder=1)
    ax.plot(gx, [16 * v for v in gx], color="tab:orange", lw=1.2, ls="-.", zorder=1)

    ax.axhline(LEARNER["bits"], color="tab:purple", lw=1, ls=":", zorder=1)
    ax.text(x_hi / 1.1, LEARNER["bits"] / 1.08,
            f"learner's MNIST prediction: 191 bits → {LEARNER['weights']} weights × "
            f"{MACKAY_FLOAT_BITS} bits = {LEARNER['bits']:,} bits",
            color="tab:purple", fontsize=7.5, ha="right", va="top")
    if estimator == "asker":
        ax.plot([LEARNER["entropy_bits"]], [LEARNER["bits"]], marker="*", ms=13, color="tab:purple", zorder=4)

    # Published MNIST >= 99% sizes: at MNIST's X if known, else as lines.
    label_items = []
    for name, bits in ANCHORS:
        text = f"{name}: {_bits_txt(bits)} (MNIST ≥ 99%)"
        if mnist_x:
            ax.plot([mnist_x], [bits], marker="D", ms=5, color="0.45", mfc="white", zorder=3)
            label_items.append((mnist_x, bits, text, "0.35", -1))
        else:
            ax.axhline(bits, color="0.7", lw=0.8, ls=":", zorder=1)
            ax.text(x_lo * 1.1, bits * 1.05, text, color="0.35", fontsize=7.5, va="bottom")

    # Prequential code lengths of the labels, where computed.
    for p in points:
        if p["preq"]:
            ax.plot([p["x"], p["x"]], [p["preq"], p["y"]], color="0.75", lw=0.8, zorder=1)
            ax.plot([p["x"]], [p["preq"]], marker="o", ms=6, mfc="white", color=PREQ_COLOR, zorder=3)
            # On the prequential X axis these points sit on y = x: that line's label names them,
            # and six copies of one sentence would crowd out the rung labels.
            if estimator != "prequential":
                label_items.append((p["x"], p["preq"], f"prequential: {_bits_txt(p['preq'])}", PREQ_COLOR, -1))

    for i, p in enumerate(points):
        color = RUNG_COLORS[i % len(RUNG_COLORS)]
        ax.plot([p["x"]], [p["y"]], marker="o", ms=8, color=color, zorder=5)
        text = (f"{p['dataset']}: {_bits_txt(p['y'])}\n"
                f"target {_target_txt(p['target'])} · test {_pct(p['test_acc'])}")
        label_items.append((p["x"], p["y"], text, color, +1))
    ax.set_xlabel(f"{X_LABELS.get(estimator, 'bits')}  (mincap entropy --estimator {estimator})", fontsize=9)
    ax.set_ylabel("smallest network reaching the target: bits of its .mincap file", fontsize=9)
    ax.set_title("Information in the dataset vs the smallest verified network that reaches the target\n"
                 "(chosen on validation; test accuracy reported)", fontsize=10)
    if skipped:
        note = "not placed: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())
        fig.text(0.01, 0.01, note, fontsize=7.5, color="0.3", ha="left", va="bottom", wrap=True)
    # Lay out first: label placement measures boxes in the final geometry.
    fig.tight_layout(rect=(0, 0.03 if skipped else 0, 1, 1))
    _place_labels(fig, ax, label_items)
    avoid = [(p["x"], p["y"]) for p in points] + [(p["x"], p["preq"]) for p in points if p["preq"]]
    avoid += [(mnist_x, b) for _, b in ANCHORS] if mnist_x else []
    on_diagonal = ("y = x: network bits = estimate (hollow circles: each rung's prequential code)"
                   if estimator == "prequential" else "y = x: network bits = estimate")
    _line_label(fig, ax, 1.0, (on_diagonal, "y = x: network bits = estimate", "y = x"), "0.4", avoid)
    _line_label(fig, ax, 16.0, (
        f"MacKay as the learner used it: estimate / 2 weights × {MACKAY_FLOAT_BITS}-bit floats (y = 16x)",
        f"MacKay as the learner: /2 weights × {MACKAY_FLOAT_BITS} bits",
        "MacKay as the learner: y = 16x",
        "MacKay ×16",
    ), "tab:orange", avoid)

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)
    return {"points": points, "skipped": skipped}


# --- figure 2 ------------------------------------------------------------------------------


def _tick_bits(v: float, _pos=None) -> str:
    """Short tick labels for bits: 500, 2k, 10k, 1.5M."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def plot_pareto(rungs: list[dict[str, Any]], output: str | Path) -> None:
    """Figure 2: each study's Pareto front (artifact bits vs validation accuracy), target line, chosen point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rungs)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), dpi=110, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, r in zip(axes.flat, rungs):
        front = r.get("pareto_front") or []
        target = r["target"]
        ax.set_xscale("log")
        ax.set_title(f"{_name(r)} (target {_target_txt(target)})", fontsize=9)
        ax.grid(True, which="major", color="0.9", lw=0.6)
        ax.axhline(target, color="tab:red", lw=1, ls="--")
        if not front:
            ax.text(0.5, 0.5, "no complete trial", transform=ax.transAxes, ha="center", va="center",
                    fontsize=8, color="0.4")
            ax.set_ylim(target - 0.05, 1.0)
            continue
        bx = [f["artifact_bits"] for f in front]
        by = [f["val_acc"] for f in front]
        ax.step(bx, by, where="post", color="0.5", lw=1)
        ok = [f for f in front if f["val_acc"] >= target]
        bad = [f for f in front if f["val_acc"] < target]
        ax.plot([f["artifact_bits"] for f in bad], [f["val_acc"] for f in bad], "o", mfc="white", color="0.4",
                ms=4)
        ax.plot([f["artifact_bits"] for f in ok], [f["val_acc"] for f in ok], "o", color="tab:blue", ms=4)
        lo = max(min(by), target - 0.06)
        hi = min(1.0, max(max(by), target) + 0.01)
        ax.set_ylim(lo - 0.005, hi + 0.002)
        ax.text(0.02, (target - (lo - 0.005)) / (hi + 0.002 - (lo - 0.005)), f" target {_target_txt(target)}",
                transform=ax.transAxes, color="tab:red", fontsize=7, va="bottom")
        c = r.get("chosen")
        if c:
            ax.plot([c["artifact_bits"]], [c["val_acc"]], "o", ms=10, mfc="none", color="tab:red", mew=1.5)
            ax.annotate(f"chosen: {_bits_txt(c['artifact_bits'])}\nval {_pct(c['val_acc'])}, "
                        f"test {_pct(c.get('test_acc'))}", (c["artifact_bits"], c["val_acc"]),
                        xytext=(0.97, 0.06), textcoords="axes fraction", ha="right", va="bottom", fontsize=7,
                        arrowprops={"arrowstyle": "-", "color": "tab:red", "lw": 0.6})
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_tick_bits))
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=1))
    fig.supxlabel("artifact bits (log)", fontsize=9)
    fig.supylabel("validation accuracy", fontsize=9)
    fig.suptitle("Pareto fronts: size vs validation accuracy (filled: reaches the target)", fontsize=10)
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)


# --- report --------------------------------------------------------------------------------

_KEEP = re.compile(r"<!-- conclusions:begin -->.*?<!-- conclusions:end -->", re.S)
REPORT_ESTIMATORS = ("asker", "pixels", "compressed", "labels", "prequential")


def _entropy_cell(rung: dict[str, Any], name: str) -> str:
    e = (rung.get("entropy") or {}).get(name)
    if not e:
        return "-"
    v = e.get("bits_total") if e.get("bits_total") is not None else e.get("bits_per_example")
    if v is None:
        return "-"
    return f"{v:,.1f}" if name == "asker" else f"{v:,.0f}"


def report_rows(rungs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per rung, as plain data (what the markdown table shows)."""
    rows = []
    for r in rungs:
        c = r.get("chosen") or {}
        cfg = r.get("config") or {}
        states = r.get("states") or {}
        row = {
            "dataset": _name(r), "study": r.get("study"), "target": r["target"],
            "entropy": {k: _entropy_cell(r, k) for k in REPORT_ESTIMATORS},
            "spec": spec_short(c.get("spec"), c.get("bits_per_layer")) if c else "none reached the target",
            "artifact_bits": c.get("artifact_bits"), "n_params": c.get("n_params"),
            "val_acc": c.get("val_acc"), "test_acc": c.get("test_acc"), "n_trials": r.get("n_trials"),
            "complete": (states.get("COMPLETE") or {}).get("trials", 0), "cpu_s": cpu_time_s(r),
            "wall_s": r.get("search_wall_s"),
            "budget": (f"{cfg['budget_trials']} trials / "
                       + (_duration_txt(cfg["budget_timeout_s"]) if cfg.get("budget_timeout_s") else "no time limit")
                       if cfg.get("budget_trials") is not None else "-"),
            "n_val": cfg.get("n_val"),
        }
        rows.append(row)
    return rows


def _md_table(rows: list[dict[str, Any]]) -> list[str]:
    head = ("dataset", "asker (bits/image)", "pixels (bits)", "compressed (bits)", "labels (bits)",
            "prequential (bits)", "target", "chosen network", "artifact bits", "parameters", "val acc",
            "test acc", "trials (complete)", "trial time", "search wall time", "budget per run")
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * 6 + ["---"] + ["---:"] * 8) + "|"]
    for w in rows:
        e = w["entropy"]
        out.append("| " + " | ".join([
            w["dataset"], e["asker"], e["pixels"], e["compressed"], e["labels"], e["prequential"],
            _target_txt(w["target"]), f"`{w['spec']}`" if w["artifact_bits"] is not None else w["spec"],
            f"{w['artifact_bits']:,}" if w["artifact_bits"] is not None else "-",
            f"{w['n_params']:,}" if w["n_params"] is not None else "-",
            _pct(w["val_acc"]), _pct(w["test_acc"]), f"{w['n_trials']} ({w['complete']})",
            _duration_txt(w["cpu_s"]), _duration_txt(w["wall_s"]), w["budget"],
        ]) + " |")
    return out


def _comparison(rungs: list[dict[str, Any]], estimator: str) -> list[str]:
    lines = []
    for r in rungs:
        c = r.get("chosen")
        if not c:
            lines.append(f"- **{_name(r)}**: no network reached {_target_txt(r['target'])} on validation.")
            continue
        b = c["artifact_bits"]
        bits = []
        for name in dict.fromkeys(("labels", "prequential", estimator)):
            e = (r.get("entropy") or {}).get(name) or {}
            v = e.get("bits_total") if e.get("bits_total") is not None else e.get("bits_per_example")
            if v:
                bits.append(f"{b / v:.3g}× the {name} figure ({v:,.0f} bits)")
        mack = ""
        if c.get("n_params"):
            mack = (f"; its {c['n_params']:,} parameters at {MACKAY_FLOAT_BITS}-bit floats would be "
                    f"{c['n_params'] * MACKAY_FLOAT_BITS:,} bits")
        lines.append(f"- **{_name(r)}** (target {_target_txt(r['target'])}): {b:,} bits"
                     + (", " + ", ".join(bits) if bits else "") + mack + ".")
    return lines


def report_markdown(rungs: list[dict[str, Any]], *, figure: str | Path, pareto: str | Path | None = None,
                    report_path: str | Path | None = None, estimator: str = "prequential",
                    machine: str | None = None, command: str = "mincap plot", conclusions: str | None = None) -> str:
    """The markdown report: figures, one table row per rung, machine and budget, comparison, conclusions."""
    base = Path(report_path).parent if report_path else Path(".")

    def rel(p) -> str:
        p = Path(p)
        try:
            return str(p.resolve().relative_to(base.resolve()))
        except ValueError:
            return str(p)

    machines = sorted({r["machine"] for r in rungs if r.get("machine")})
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
        "(the learner's computation, not an entropy); the others are bits for the whole training set.",
        "",
        "## Every rung",
        "",
        *_md_table(rows),
        "",
        f"## Comparison (generated; X of the plot: `{estimator}`)",
        "",
        *_comparison(rungs, estimator),
        "",
        f"The learner's reading of MacKay's rule: 191 bits / 2 = {LEARNER['weights']} weights; at "
        f"{MACKAY_FLOAT_BITS}-bit floats, {LEARNER['bits']:,} bits (the purple line of the plot).",
        "",
        "## Conclusions",
        "",
        conclusions or "<!-- conclusions:begin -->\n_To be written from the results above._\n<!-- conclusions:end -->",
        "",
    ]
    return "\n".join(lines)


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
