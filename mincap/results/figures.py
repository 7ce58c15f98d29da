"""The ladder figures, drawn with matplotlib from the data `mincap.results.ladder` extracts.

Figure 1 (`plot_ladder`, `-o FILE.png`): for each study, X = one entropy estimate of its
dataset (bits for the whole training set where defined, else bits per image), Y = the
artifact bits of its chosen network (smallest trial whose *validation* accuracy reaches the
target), both log scale, each point labelled with the dataset, its bits, the target and the
test accuracy. Both axes are upper bounds and say so: Y is the smallest network *found*, X a
code length (or size) that a better model would shorten. Beside each point: its network's
two-part code (file + training labels coded with it; hollow square), the rung's prequential
codes (hollow circle: MLP; hollow triangle: switching CNNs), its replicates (other seeds of
the chosen configuration: an error bar over their bits, and how many reach the target), and
networks from files made outside a study (squares). Reference lines: y = x; MacKay's rule in
the axes' units (X bits need X / 2 weights, at w bits per weight (X / 2) * w bits, w the
placed files' weight width, named in the legend); the learner's MNIST prediction (191 bits ->
95 weights x 32 bits = 3,040 bits, kept as the learner had it); published MNIST >= 99% sizes.
Labels are placed so that none overlaps another.

Figure 2 (`plot_pareto`, `FILE-pareto.png`): each study's Pareto front, artifact bits
against validation accuracy, with the target line and the chosen network marked.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas, not pyplot: no global
backend or figure registry is touched by importing or drawing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mincap.errors import MincapError
from mincap.report import fmt_acc, fmt_bits_unit, fmt_target
from mincap.results.ladder import (
    ANCHORS,
    LEARNER,
    MACKAY_FLOAT_BITS,
    LadderInfo,
    ParetoInfo,
    ladder_info,
    pareto_info,
)

__all__ = ["draw_ladder", "draw_pareto", "pareto_path", "place_labels", "plot_ladder", "plot_pareto"]

# Reference colours (grey y = x and anchors, orange MacKay, purple learner, dark green
# prequential); the rungs take the others.
PREQ_COLOR = "darkgreen"
RUNG_COLORS = ("tab:blue", "tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "navy",
               "darkgoldenrod", "crimson", "teal", "slateblue", "black")

X_LABELS = {
    "asker": "the learner's 'entropy': Σ −p_i log2 p_i over pixels, bits per image (not an entropy, bounds nothing)",
    "pixels": "Σ H2(p_i) over binarized pixels × images (an upper bound on the binarized images' entropy): bits",
    "compressed": "best compressed size of the training images (an upper bound on their information): bits",
    "labels": "H(Y) × images: the training labels sent with no model (an upper bound): bits",
    "prequential": "prequential code of the training labels given the images, one-hidden-layer MLP\n"
                   "(an upper bound on the information in the labels): bits",
    "prequential-switch": "prequential code of the training labels given the images, switching between a linear "
                          "model and two CNNs\n(an upper bound on the information in the labels): bits",
}
Y_LABEL = "smallest network found (an upper bound on the minimum): bits of its .mincap file"
# How each prequential estimator's code is drawn beside a rung.
CODE_MARKERS = {"prequential": "o", "prequential-switch": "^"}

FILE_SHIFT = 1.08  # a file's marker sits at 1.08 X (log axis): beside, not on, the study's point


def pareto_path(output: str | Path) -> Path:
    """Where the second figure goes: FILE.png -> FILE-pareto.png."""
    p = Path(output)
    return p.with_name(f"{p.stem}-pareto{p.suffix}")


def _new_figure(**kw) -> Figure:
    fig = Figure(**kw)
    FigureCanvasAgg(fig)  # attaches itself: label placement measures text with its renderer
    return fig


def _save(fig: Figure, output: str | Path) -> None:
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)


# --- label placement -----------------------------------------------------------------------


def place_labels(fig, ax, items, fontsize=8) -> None:
    """Label points directly, nudging labels vertically so that none overlaps another.

    `items`: (x, y, text, color, side) with side +1 (right of the point) or -1 (left).
    Greedy: labels are placed in order of their point's height; each tries vertical
    offsets 0, -1, +1, -2, ... half line heights, on its own side first and then on the
    other, until its box stays inside the axes and clears every point, the labels placed
    before and the texts already drawn (a reference line's caption); a moved label gets a
    thin leader line to its point. None clearing, the first position inside the axes is kept.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # Texts drawn before (reference-line captions) are obstacles like placed labels.
    placed = [t.get_window_extent(renderer).padded(2) for t in ax.texts if t.get_visible()]
    if ax.get_legend() is not None:
        placed.append(ax.get_legend().get_window_extent(renderer).padded(2))
    pts = [tuple(ax.transData.transform((x, y))) for x, y, *_ in items]
    box = ax.get_window_extent(renderer)
    to_pt = 72.0 / fig.dpi
    for (x, y, text, color, side), _pt in sorted(zip(items, pts), key=lambda it: it[1][1]):
        t = ax.annotate(text, (x, y), xytext=(0, 0), textcoords="offset points", va="center", fontsize=fontsize,
                        color=color)
        step = t.get_window_extent(renderer).height * 0.5
        best = fallback = None
        for s in (side, -side):
            t.set_horizontalalignment("left" if s > 0 else "right")
            for k in range(120):
                dy = ((k + 1) // 2) * (1 if k % 2 == 0 else -1) * step if k else 0.0
                t.set_position((7 * s, dy * to_pt))
                bb = t.get_window_extent(renderer).padded(2)
                if not (box.x0 <= bb.x0 and bb.x1 <= box.x1 and box.y0 <= bb.y0 and bb.y1 <= box.y1):
                    continue
                fallback = fallback or (s, dy)
                if not any(bb.overlaps(o) for o in placed) and not any(bb.contains(px, py) for px, py in pts):
                    best = (s, dy)
                    break
            if best:
                break
        s, dy = best or fallback or (side, 0.0)
        t.remove()
        arrow = ({"arrowprops": {"arrowstyle": "-", "color": color, "lw": 0.5, "shrinkA": 0, "shrinkB": 4}}
                 if dy else {})
        t = ax.annotate(text, (x, y), xytext=(7 * s, dy * to_pt), textcoords="offset points",
                        ha="left" if s > 0 else "right", va="center", fontsize=fontsize, color=color, **arrow)
        placed.append(t.get_window_extent(renderer).padded(2))


def _line_label(fig, ax, factor: float, texts: tuple[str, ...], color, avoid_pts) -> None:
    """Label the line y = factor * x along itself, inside the axes, clear of every text and point.

    Among positions along the line whose label box stays inside the axes and overlaps no
    other text, the one farthest from the points is taken; none fitting, the next (shorter)
    text is tried.
    """
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


# --- figure 1 ------------------------------------------------------------------------------


def draw_ladder(info: LadderInfo, estimator: str) -> Figure:
    """Figure 1 from its data: rung i is a marker of colour RUNG_COLORS[i] at (x, y), labelled."""
    points, skipped, mnist_x = info.points, info.skipped, info.mnist_x
    (x_lo, x_hi), (y_lo, y_hi) = info.xlim, info.ylim
    fig = _new_figure(figsize=(10, 7), dpi=110)
    ax = fig.subplots()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.grid(True, which="major", color="0.9", lw=0.6)
    ax.set_axisbelow(True)

    # Reference lines, labelled on the line.
    gx = [x_lo, x_hi]
    w = info.mackay_width
    ax.plot(gx, gx, color="0.55", lw=1, ls="--", zorder=1)
    ax.plot(gx, [w / 2 * v for v in gx], color="tab:orange", lw=1.2, ls="-.", zorder=1,
            label=f"MacKay: X bits need X/2 weights, × {w} bits per weight (the files' weight width) = {w / 2:g}X")

    ax.axhline(LEARNER["bits"], color="tab:purple", lw=1, ls=":", zorder=1)
    ax.text(x_hi / 1.1, LEARNER["bits"] / 1.08,
            f"learner's MNIST prediction: 191 bits → {LEARNER['weights']} weights × "
            f"{MACKAY_FLOAT_BITS} bits = {LEARNER['bits']:,} bits",
            color="tab:purple", fontsize=7.5, ha="right", va="top")
    if estimator == "asker":
        ax.plot([LEARNER["entropy_bits"]], [LEARNER["bits"]], marker="*", ms=13, color="tab:purple", zorder=4)

    # Published MNIST >= 99% sizes: a line each, captioned at the left where the plot is empty (a
    # caption beside MNIST's own cluster of points crowded out their labels), and a marker at MNIST's X.
    label_items = []
    for name, bits in ANCHORS:
        ax.axhline(bits, color="0.7", lw=0.8, ls=":", zorder=1)
        ax.text(x_lo * 1.1, bits * 1.05, f"{name}: {fmt_bits_unit(bits)} (MNIST ≥ 99%)", color="0.35",
                fontsize=7.5, va="bottom")
        if mnist_x:
            ax.plot([mnist_x], [bits], marker="D", ms=5, color="0.45", mfc="white", zorder=3)

    # Prequential code lengths of the labels, where computed.
    for p in points:
        for name, bits in p["codes"].items():
            ax.plot([p["x"], p["x"]], [bits, p["y"]], color="0.75", lw=0.8, zorder=1)
            ax.plot([p["x"]], [bits], marker=CODE_MARKERS.get(name, "o"), ms=6, mfc="white", color=PREQ_COLOR,
                    zorder=3)
            # On a prequential X axis its own points sit on y = x: that line's label names them,
            # and six copies of one sentence would crowd out the rung labels.
            if estimator != name:
                label_items.append((p["x"], bits, f"{name}: {fmt_bits_unit(bits)}", PREQ_COLOR, -1))

    colors = {}
    for i, p in enumerate(points):
        color = colors[p["dataset"]] = RUNG_COLORS[i % len(RUNG_COLORS)]
        ax.plot([p["x"]], [p["y"]], marker="o", ms=8, color=color, zorder=5)
        rep = p.get("replicates")
        seeds = ""
        if rep:
            if rep["bits_lo"] is not None:
                lo, hi = min(rep["bits_lo"], p["y"]), max(rep["bits_hi"], p["y"])
                ax.plot([p["x"], p["x"]], [lo, hi], color=color, lw=1.6, zorder=4, solid_capstyle="butt")
                ax.plot([p["x"]] * 2, [lo, hi], ls="none", marker="_", ms=9, mew=1.6, color=color, zorder=4)
            seeds = f" · {rep['n_reach']}/{rep['k']} other seeds reach it"
        text = (f"{p['dataset']}: {fmt_bits_unit(p['y'])}\n"
                f"target {fmt_target(p['target'])} · test {fmt_acc(p['test_acc'])}{seeds}")
        label_items.append((p["x"], p["y"], text, color, +1))
        if p.get("two_part"):
            _two_part(ax, p["x"], p["y"], p["two_part"], color, label_items)
    # Just right of the rung's X: a file within a few % of the study's choice would hide its point.
    file_xs = [f["x"] * FILE_SHIFT for f in info.files]
    for f, fx in zip(info.files, file_xs):
        color = colors.get(f["dataset"], "black")
        ax.plot([fx], [f["y"]], marker="s", ms=8, color=color, mec="black", mew=1.0, zorder=5)
        label_items.append((fx, f["y"], f"{f['file']} ({f.get('made_by', 'mincap train')}): {fmt_bits_unit(f['y'])}\n"
                            f"val {fmt_acc(f['val_acc'])} · test {fmt_acc(f['test_acc'])}", color, +1))
        if f.get("two_part"):
            _two_part(ax, fx, f["y"], f["two_part"], color, None)
    _legend(ax, info)
    ax.set_xlabel(f"{X_LABELS.get(estimator, 'bits')}  (mincap entropy --estimator {estimator})", fontsize=9)
    ax.set_ylabel(Y_LABEL, fontsize=9)
    ax.set_title("Information in the dataset vs the smallest network found that reaches the target\n"
                 "(both upper bounds; chosen on validation, test accuracy reported)", fontsize=10)
    if skipped:
        note = "not placed: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())
        fig.text(0.01, 0.01, note, fontsize=7.5, color="0.3", ha="left", va="bottom", wrap=True)
    # Lay out first: label placement measures boxes in the final geometry.
    fig.tight_layout(rect=(0, 0.03 if skipped else 0, 1, 1))
    place_labels(fig, ax, label_items)
    avoid = [(p["x"], p["y"]) for p in points] + [(p["x"], b) for p in points for b in p["codes"].values()]
    avoid += [(p["x"], p["two_part"]) for p in points if p.get("two_part")] + [(fx, f["y"]) for f, fx in zip(info.files, file_xs)]
    avoid += [(mnist_x, b) for _, b in ANCHORS] if mnist_x else []
    on_diagonal = ("y = x: network bits = estimate (hollow markers on it: each rung's code of this estimator)"
                   if estimator in CODE_MARKERS else "y = x: network bits = estimate")
    _line_label(fig, ax, 1.0, (on_diagonal, "y = x: network bits = estimate", "y = x"), "0.4", avoid)
    _line_label(fig, ax, w / 2, (
        f"MacKay: X / 2 weights × {w} bits (y = {w / 2:g}x)",
        f"MacKay, {w}-bit weights",
    ), "tab:orange", avoid)
    return fig


def _two_part(ax, x: float, y: float, bits: float, color, label_items: list | None) -> None:
    """A network's two-part code (file + training labels) above its point: hollow square, dotted link,
    and its number where `label_items` is given (a file's is left unlabelled: several files at one
    rung would crowd it; the files table has them)."""
    ax.plot([x, x], [y, bits], color=color, lw=0.8, ls=":", zorder=2)
    ax.plot([x], [bits], marker="s", ms=6, mfc="white", color=color, zorder=4)
    if label_items is not None:
        label_items.append((x, bits, f"two-part: {fmt_bits_unit(bits)}", color, -1))


def _legend(ax, info: LadderInfo) -> None:
    """What each kind of marker is, with the MacKay line's weight width (proxies: nothing drawn)."""
    kw = {"ls": "none", "color": "0.3"}
    ax.plot([], [], marker="o", ms=7, label="smallest network a study found (validation ≥ target)", **kw)
    if info.files:
        ax.plot([], [], marker="s", ms=7, mec="black", label="network from a documented command, outside a search (drawn just right of its rung's X)", **kw)
    if any(p.get("two_part") for p in info.points) or any(f.get("two_part") for f in info.files):
        ax.plot([], [], marker="s", ms=6, mfc="white", label="two-part code: file + training labels coded with it",
                **kw)
    for name, m in CODE_MARKERS.items():
        if any(name in p["codes"] for p in info.points):
            ax.plot([], [], marker=m, ms=6, mfc="white", ls="none", color=PREQ_COLOR,
                    label=f"{name} code of the training labels (an upper bound)")
    if any(p.get("replicates") for p in info.points):
        ax.plot([], [], marker="_", ms=9, mew=1.6, label="bar: bits of the chosen configuration over seeds", **kw)
    ax.legend(loc="lower right", fontsize=7, framealpha=0.9)


def plot_ladder(rungs: list[dict[str, Any]], output: str | Path, *, estimator: str = "prequential",
                data_dir=None, compute: bool = True, artifacts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Figure 1: entropy estimate (X) vs artifact bits of the chosen network (Y), log-log, saved to `output`.

    `artifacts`: verify records of files made outside a study, placed where they reach a rung's target.
    Returns what was drawn: {"points": [...], "files": [...], "skipped": {name: reason}}. A figure that
    would place none of the rungs is not written: one-line MincapError naming why each is not.
    """
    info = ladder_info(rungs, estimator, data_dir=data_dir, compute=compute, artifacts=artifacts)
    if not info.points and not info.files:
        why = "; ".join(f"{k} ({v})" for k, v in info.skipped.items())
        hint = (f"; run: mincap entropy DATASET --estimator {estimator}"
                if any("estimate" in v for v in info.skipped.values()) else "")
        raise MincapError(f"{output}: would place 0 of {len(rungs)} studies, so nothing was written: {why}{hint}")
    _save(draw_ladder(info, estimator), output)
    return {"points": info.points, "files": info.files, "skipped": info.skipped}


# --- figure 2 ------------------------------------------------------------------------------


def _tick_bits(v: float, _pos=None) -> str:
    """Short tick labels for bits: 500, 2k, 10k, 1.5M."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _draw_front(ax, info: ParetoInfo) -> None:
    target = info.target
    ax.set_xscale("log")
    ax.set_title(f"{info.name} (target {fmt_target(target)})", fontsize=9)
    ax.grid(True, which="major", color="0.9", lw=0.6)
    ax.axhline(target, color="tab:red", lw=1, ls="--")
    ax.set_ylim(*info.ylim)
    if not info.front:
        ax.text(0.5, 0.5, "no complete trial", transform=ax.transAxes, ha="center", va="center",
                fontsize=8, color="0.4")
        return
    ax.step([b for b, _ in info.front], [a for _, a in info.front], where="post", color="0.5", lw=1)
    ax.plot([b for b, _ in info.missed], [a for _, a in info.missed], "o", mfc="white", color="0.4", ms=4)
    ax.plot([b for b, _ in info.reached], [a for _, a in info.reached], "o", color="tab:blue", ms=4)
    y0, y1 = info.ylim
    ax.text(0.02, (target - y0) / (y1 - y0), f" target {fmt_target(target)}",
            transform=ax.transAxes, color="tab:red", fontsize=7, va="bottom")
    c = info.chosen
    if c:
        ax.plot([c["artifact_bits"]], [c["val_acc"]], "o", ms=10, mfc="none", color="tab:red", mew=1.5)
        ax.annotate(f"chosen: {fmt_bits_unit(c['artifact_bits'])}\nval {fmt_acc(c['val_acc'])}, "
                    f"test {fmt_acc(c.get('test_acc'))}", (c["artifact_bits"], c["val_acc"]),
                    xytext=(0.97, 0.06), textcoords="axes fraction", ha="right", va="bottom", fontsize=7,
                    arrowprops={"arrowstyle": "-", "color": "tab:red", "lw": 0.6})
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(_tick_bits))
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=1))


def draw_pareto(infos: list[ParetoInfo]) -> Figure:
    """Figure 2 from its data: one panel per study, four to a row."""
    n = len(infos)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(figsize=(3.6 * ncols, 3.0 * nrows), dpi=110)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, info in zip(axes.flat, infos):
        _draw_front(ax, info)
    fig.supxlabel("artifact bits (log)", fontsize=9)
    fig.supylabel("validation accuracy", fontsize=9)
    fig.suptitle("Pareto fronts: size vs validation accuracy (filled: reaches the target)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_pareto(rungs: list[dict[str, Any]], output: str | Path) -> None:
    """Figure 2: each study's Pareto front (artifact bits vs validation accuracy), target line, chosen point."""
    _save(draw_pareto([pareto_info(r) for r in rungs]), output)
