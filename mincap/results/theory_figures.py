"""The figures of issue 17's two experiments, drawn from the data of `capacity` and `locality`.

Capacity (`draw_capacity`), three panels, log-log:
1. bits against N: each random-label rung's smallest network reaching its target, its Pareto
   front (grey), Fano's lower bound at the target (a line: no file can sit below it) and at the
   accuracy each network reached (ticks), and the labels' own N·log2 10 bits;
2. parameters against N: the chosen networks' parameter counts against MacKay's prediction
   N·log2 10 / 2 weights, each labelled with its bits per parameter;
3. bits against the information in the labels: random labels (X = N·log2 10, exact) beside the
   real-label ladder (X = its stored estimate, figure 1's), each with its fitted log-log slope.

Locality (`draw_locality`), two panels: the four cells' Pareto fronts (bits against validation
accuracy, target line), and the smallest network per cell as bars (mnist beside mnist-permuted,
per family) with the depth table's smallest networks as points.

Built on `Figure` with an Agg canvas, as `mincap.results.figures` is (no pyplot state).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mincap.report import fmt_bits_unit, fmt_target
from mincap.results.capacity import CapacityInfo, fano_bits_per_label
from mincap.results.figures import place_labels
from mincap.results.locality import CELLS, LocalityInfo

__all__ = ["draw_capacity", "draw_locality", "plot_capacity", "plot_locality"]

CELL_COLORS = {("mlp", "mnist"): "tab:blue", ("mlp", "permuted"): "lightskyblue",
               ("cnn", "mnist"): "tab:red", ("cnn", "permuted"): "lightsalmon"}


def _figure(**kw) -> Figure:
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _slope_text(s: float | None) -> str:
    return "slope n/a" if s is None else f"slope {s:.2f}"


def draw_capacity(info: CapacityInfo) -> Figure:
    """The capacity figure from `capacity_info`'s data (rungs with no network are drawn as 'none')."""
    fig = _figure(figsize=(15, 5.2), dpi=100)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    rows = info.rows
    ns = [w["n"] for w in rows]
    n_grid = [min(ns) / 1.4, max(ns) * 1.4] if ns else [100, 10_000]
    for ax in (ax1, ax2, ax3):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="major", color="0.9", lw=0.6)
        ax.set_axisbelow(True)

    # 1: bits against N, with Fano's bound.
    targets = sorted({w["target"] for w in rows})
    for t in targets:
        ax1.plot(n_grid, [n * fano_bits_per_label(t) for n in n_grid], color="tab:red", lw=1.3,
                 label=f"Fano lower bound at {fmt_target(t)}: N·{fano_bits_per_label(t):.3f} bits")
    ax1.plot(n_grid, [n * math.log2(10) for n in n_grid], color="0.55", lw=1, ls="--",
             label="the labels themselves: N·log2 10 bits")
    first = True
    for w in rows:
        if w["front"]:
            ax1.plot([w["n"]] * len(w["front"]), [b for b, _ in w["front"]], "_", color="0.6", ms=9,
                     label="Pareto front (any accuracy)" if first else None)
            first = False
    found = [w for w in rows if w["artifact_bits"]]
    ax1.plot([w["n"] for w in found], [w["artifact_bits"] for w in found], "o-", color="tab:blue", ms=7,
             label="smallest network reaching the target")
    for w in found:
        ax1.plot([w["n"]], [w["fano_bits"]], "v", color="tab:red", ms=6, mfc="white")
        ax1.annotate(f"{fmt_bits_unit(w['artifact_bits'])}\n{w['artifact_bits'] / w['fano_bits']:.2g}× Fano"
                     if w["fano_bits"] else fmt_bits_unit(w["artifact_bits"]),
                     (w["n"], w["artifact_bits"]), xytext=(5, 4), textcoords="offset points", fontsize=7,
                     color="tab:blue")
    for w in rows:
        if not w["artifact_bits"]:
            ax1.annotate("none", (w["n"], w["fano_target_bits"]), xytext=(0, 8), textcoords="offset points",
                         fontsize=7, color="0.4", ha="center")
    ax1.set_xlabel("N: random labels memorized (first N MNIST training images)", fontsize=9)
    ax1.set_ylabel("bits of the .mincap file", fontsize=9)
    ax1.set_title("Memorizing N random labels: size vs Fano's bound\n(validation = the training set itself; "
                  "▽ = the bound at the accuracy reached)", fontsize=9)
    ax1.legend(fontsize=7, loc="best", framealpha=0.85)

    # 2: parameters against N, MacKay's prediction.
    ax2.plot(n_grid, [n * math.log2(10) / 2 for n in n_grid], color="tab:orange", lw=1.3, ls="-.",
             label="MacKay: N·log2 10 / 2 weights (2 bits per weight)")
    ax2.plot([w["n"] for w in found], [w["n_params"] for w in found], "s-", color="tab:green", ms=6,
             label="parameters of the smallest network")
    for w in found:
        if w["bits_per_param"]:
            ax2.annotate(f"{w['bits_per_param']:.2f} bits/param", (w["n"], w["n_params"]), xytext=(5, -10),
                         textcoords="offset points", fontsize=7, color="tab:green")
    ax2.set_xlabel("N", fontsize=9)
    ax2.set_ylabel("parameters", fontsize=9)
    ax2.set_title("Parameters vs MacKay's capacity prediction", fontsize=9)
    ax2.legend(fontsize=7, loc="best", framealpha=0.85)

    for ax in (ax1, ax2):  # N on its own ticks; a little room above for the labels
        if ns:
            ax.set_xticks(ns, [f"{n:,}" for n in ns], fontsize=8)
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.margins(y=0.12)

    # 3: bits against the labels' information, random beside real.
    ax3.plot([w["label_bits"] for w in found], [w["artifact_bits"] for w in found], "o-", color="tab:blue",
             label=f"random labels (X = N·log2 10), {_slope_text(info.slope_random)}")
    lp = info.ladder_points
    ax3.plot([p[1] for p in lp], [p[2] for p in lp], "D", color="tab:purple", ms=6,
             label=f"real-label ladder (X = {info.estimator}), {_slope_text(info.slope_ladder)}")
    for name, x, y in lp:
        ax3.annotate(name, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7, color="tab:purple")
    xs = [w["label_bits"] for w in found] + [p[1] for p in lp]
    if xs:
        g = [min(xs) / 2, max(xs) * 2]
        ax3.plot(g, g, color="0.55", lw=1, ls="--", label="y = x")
    ax3.set_xlabel("information in the labels given the images: bits", fontsize=9)
    ax3.set_ylabel("bits of the smallest network reaching the target", fontsize=9)
    ax3.set_title("Memorized vs learned: log-log slopes", fontsize=9)
    ax3.legend(fontsize=7, loc="best", framealpha=0.85)
    fig.tight_layout()
    return fig


def draw_locality(info: LocalityInfo) -> Figure:
    """The locality figure from `locality_info`'s data; a missing cell is labelled as such."""
    fig = _figure(figsize=(13, 5.2), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.set_xscale("log")
    ax1.grid(True, which="major", color="0.9", lw=0.6)
    for t in info.targets:
        ax1.axhline(t, color="tab:red", lw=1, ls="--")
    accs = [a for w in info.cells.values() for _, a in w["front"]]
    lo = max(min(accs), min(info.targets) - 0.05) if accs and info.targets else None
    for cell in CELLS:
        w = info.cells.get(cell)
        if not w or not w["front"]:
            continue
        ax1.step([b for b, _ in w["front"]], [a for _, a in w["front"]], where="post", color=CELL_COLORS[cell],
                 lw=1.4, marker="o", ms=3, label=f"{cell[0]} on {w['dataset']}")
    if lo is not None:
        ax1.set_ylim(lo - 0.005, min(1.0, max(accs + info.targets) + 0.005))
    ax1.set_xlabel("bits of the .mincap file (log)", fontsize=9)
    ax1.set_ylabel("validation accuracy", fontsize=9)
    ax1.set_title("Pareto fronts of the four cells (dashed: the common target)", fontsize=9)
    if info.cells:
        ax1.legend(fontsize=7, loc="lower right")

    # Bars: smallest network per cell; points: smallest per depth. The limits are set from the data
    # first (a log axis's bar has no natural bottom; a factor 3 below the smallest keeps every bar
    # visible).
    ax2.set_yscale("log")
    heights = [b for w in info.cells.values() if (b := w.get("artifact_bits"))]
    heights += [d["artifact_bits"] for d in info.depth if d["artifact_bits"]]
    if heights:
        ax2.set_ylim(min(heights) / 3, max(heights) * 1.6)
    ax2.grid(True, axis="y", which="major", color="0.9", lw=0.6)
    ax2.set_axisbelow(True)
    ticks, labels, depth_labels = [], [], []
    for i, cell in enumerate(CELLS):
        w = info.cells.get(cell) or {}
        x = i + (i // 2) * 0.6
        ticks.append(x)
        labels.append(f"{cell[0]}\n{'mnist' if cell[1] == 'mnist' else 'permuted'}")
        bits = w.get("artifact_bits")
        if bits:
            ax2.bar([x], [bits], width=0.7, color=CELL_COLORS[cell])
            ax2.annotate(fmt_bits_unit(bits), (x, bits), xytext=(0, 3), textcoords="offset points",
                         ha="center", fontsize=7)
        else:
            ax2.annotate("none reached\nthe target" if w else "not run", (x, 0.03), ha="center", fontsize=7,
                         color="0.4", xycoords=("data", "axes fraction"), va="bottom")
        for bits_d, depth in sorted((d["artifact_bits"], d["depth"]) for d in info.depth
                                    if (d["family"], d["input"]) == cell and d["artifact_bits"]):
            ax2.plot([x + 0.25], [bits_d], "k.", ms=5)
            depth_labels.append((x + 0.25, bits_d, f"depth {depth}", "black", 1))
    ax2.set_xticks(ticks, labels, fontsize=8)
    ax2.set_xlim(ticks[0] - 0.7, ticks[-1] + 0.9)
    ax2.set_ylabel("bits of the smallest network reaching the target", fontsize=9)
    target = fmt_target(info.target) if info.target is not None else "targets differ"
    ax2.set_title(f"Smallest network per cell at {target} (points: smallest per depth)", fontsize=9)
    fig.tight_layout()
    # After the layout, so that the labels are placed in the axes' final pixels: each clear of the
    # others, the bar captions and the points (the ladder figure's placement).
    place_labels(fig, ax2, depth_labels, fontsize=6.5)
    return fig


def plot_capacity(info: CapacityInfo, output: str | Path) -> Path:
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    draw_capacity(info).savefig(output)
    return Path(output)


def plot_locality(info: LocalityInfo, output: str | Path) -> Path:
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    draw_locality(info).savefig(output)
    return Path(output)
