"""The information plane: (I(X;T), I(T;Y)) of every layer at every kept epoch.

One colour family per layer (light = early epochs, dark = late: the epoch ramp), a line
joining a layer's epochs in order, and the two ceilings every estimate here is under:
I(X;T) <= log2 N (dashed vertical) and I(T;Y) <= H(Y) (dashed horizontal), N and H(Y)
of the sample written in each panel. One panel per estimator setting. Drawn on a
`matplotlib.figure.Figure` with an Agg canvas (no pyplot state).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

__all__ = ["LAYER_CMAPS", "plane_figure", "result_plane", "setting_label"]

LAYER_CMAPS = ("Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd")


def setting_label(s: dict) -> str:
    if s["estimator"] == "bin":
        return f"binning, {s['bins']} bins"
    if s["estimator"].startswith("kde"):
        rel = " x layer spread" if s["estimator"] == "kde-rel" else ""
        return f"KDE upper bound, noise var {s['noise_var']:g}{rel}"
    return "exact (plug-in on the sample)"


def _panel(ax, traj: dict, s: dict) -> None:
    epochs = np.array(traj["epochs"])
    xt, ty = np.array(s["i_xt_bits"]), np.array(s["i_ty_bits"])
    single = len(epochs) == 1  # one network, no training: dark points, each named
    norm = LogNorm(vmin=1, vmax=max(2, epochs.max()))
    ramp = np.array([0.8]) if single else 0.25 + 0.75 * norm(np.maximum(epochs, 1))  # epoch 0 lightest
    for k, name in enumerate(traj["layers"]):
        cmap = colormaps[LAYER_CMAPS[k % len(LAYER_CMAPS)]]
        ax.plot(xt[:, k], ty[:, k], color=cmap(0.6), lw=0.8, alpha=0.6, zorder=1)
        ax.scatter(xt[:, k], ty[:, k], c=cmap(ramp), s=40 if single else 18, edgecolors="none", zorder=3,
                   label=name)
    if single:  # layers on the same point (the ceiling, typically) share one label
        at: dict[tuple[float, float], list[str]] = {}
        for k, name in enumerate(traj["layers"]):
            at.setdefault((round(xt[0, k], 2), round(ty[0, k], 2)), []).append(name)
        for (x, y), names in at.items():
            ax.annotate(", ".join(names), (x, y), xytext=(-4, -10), textcoords="offset points", ha="right",
                        fontsize=7)
    ax.axvline(traj["ceiling_xt_bits"], ls="--", color="k", lw=0.8)
    ax.axhline(traj["h_y_bits"], ls="--", color="k", lw=0.8)
    ax.text(0.02, 0.97, f"N = {traj['n_samples']}: I(X;T) <= log2 N = {traj['ceiling_xt_bits']:.2f}\n"
            f"I(T;Y) <= H(Y) = {traj['h_y_bits']:.3f} bits", transform=ax.transAxes, va="top", fontsize=7)
    ax.set_title(setting_label(s), fontsize=9)
    ax.set_xlabel("I(X;T) (bits)")
    ax.set_ylabel("I(T;Y) (bits)")
    ax.set_xlim(-0.2, traj["ceiling_xt_bits"] + 0.5)
    ax.set_ylim(-0.03, traj["h_y_bits"] * 1.12)


def plane_figure(traj: dict, path: str | Path, *, settings: list[dict] | None = None, title: str = "") -> Path:
    """Save the information plane of `traj` (one panel per setting) to `path` (PNG)."""
    settings = settings if settings is not None else traj["settings"]
    n = len(settings)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.6 * cols, 4.0 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, s in zip(axes.flat, settings):
        _panel(ax, traj, s)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles = [axes.flat[0].scatter([], [], color=colormaps[LAYER_CMAPS[k % len(LAYER_CMAPS)]](0.8), label=name)
               for k, name in enumerate(traj["layers"])]
    ramp_note = "" if len(traj["epochs"]) == 1 else "\n(light: early,\n dark: late)"
    fig.legend(handles=handles, loc="outside right center", title="layer" + ramp_note, fontsize=8)
    if traj.get("accuracy"):
        acc = traj["accuracy"][-1]
        title += (f"\nepochs 0..{traj['epochs'][-1]} (log-spaced points), final val acc {100 * acc['val_acc']:.1f}%, "
                  f"train acc on the MI sample {100 * acc['train_acc']:.1f}%")
    fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def result_plane(res) -> dict:
    """A one-epoch 'trajectory' of an `InfoResult` (mincap.info.analyze), for `plane_figure`."""
    settings = []
    for est in dict.fromkeys(r["estimator"] for r in res.rows):
        rows = [r for r in res.rows if r["estimator"] == est]
        settings.append({"estimator": est, "bins": res.bins, "noise_var": res.noise_var,
                         "i_xt_bits": [[r["i_xt_bits"] for r in rows]], "i_ty_bits": [[r["i_ty_bits"] for r in rows]]})
    return {"layers": [lay["name"] for lay in res.layers], "epochs": [0], "n_samples": res.n_samples,
            "ceiling_xt_bits": res.ceiling_xt_bits, "h_y_bits": res.h_y_bits, "settings": settings}
