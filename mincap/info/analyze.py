"""`mincap info` on one network: MI per layer on a stated sample of the train split.

`load_target` turns a `.mincap` file or a study trial into the decoded network and the
dataset it was made for; `analyze` draws a seeded sample of the *train* split (never
validation or test), runs the network once, and computes for every layer and every
requested estimator the row `mincap info --json` prints: layer, estimator, n_samples,
i_xt_bits, i_ty_bits, i_next_bits (null for the last layer). The ceilings that bound every
row, log2 N for I(X;T) and H(Y) of the sample for I(T;Y), come with the rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from mincap.config.study import load_study_file
from mincap.data import load
from mincap.errors import MincapError
from mincap.format.container import decode, read
from mincap.info.activations import layer_activations, sample_indices
from mincap.info.estimators import (
    DEFAULT_BINS,
    DEFAULT_NOISE_VAR,
    ESTIMATORS,
    label_entropy_bits,
    layer_mi,
)
from mincap.results.summary import pick_trial
from mincap.search.storage import artifact_bytes, open_study

__all__ = ["DEFAULT_SAMPLES", "InfoResult", "Target", "analyze", "info_table", "load_target", "summary_columns"]

DEFAULT_SAMPLES = 1000  # train images per analysis: KDE is O(N^2) in memory and time


@dataclass
class Target:
    """A decoded network and where it came from."""

    model: object
    spec: object
    dataset: str
    artifact_bits: int
    label: str
    n_val: int | None = None
    split_seed: int | None = None


@dataclass
class InfoResult:
    rows: list[dict]
    layers: list[dict]  # name, units per layer
    n_samples: int
    ceiling_xt_bits: float  # log2 N
    h_y_bits: float  # plug-in H(Y) of the sample
    dataset: str
    bins: int
    noise_var: float
    sample_seed: int
    time_s: float = 0.0


def load_target(target: str, *, trial: int | None = None, dataset: str | None = None) -> Target:
    """The network in `target`: a .mincap file, or a study file's trial (`trial`; None: the chosen one)."""
    p = Path(target)
    if not p.is_file():
        raise MincapError(f"{target}: no such file (a .mincap artifact or a study .toml)")
    if p.suffix == ".toml":
        cfg = load_study_file(p)
        study = open_study(cfg, create=False)
        t = pick_trial(study, cfg.study.target, trial)
        data = artifact_bytes(cfg, t)
        dec = decode(data)
        return Target(dec.model, dec.spec, dataset or cfg.study.dataset, 8 * len(data),
                      f"{cfg.study.name} trial {t.number}", cfg.data.n_val, cfg.data.split_seed)
    if trial is not None:
        raise MincapError("--trial applies to a study .toml, not to a .mincap file")
    data = read(p)
    dec = decode(data)
    return Target(dec.model, dec.spec, dataset or "mnist", 8 * len(data), p.name)


def analyze(tgt: Target, *, estimators: tuple[str, ...] = ESTIMATORS, n_samples: int = DEFAULT_SAMPLES,
            bins: int = DEFAULT_BINS, noise_var: float = DEFAULT_NOISE_VAR, seed: int = 0,
            data_dir: str | None = None) -> InfoResult:
    """Per-layer I(X;T), I(T;Y), I(T_l;T_l+1) of `tgt` on `n_samples` train images drawn with `seed`."""
    bad = [e for e in estimators if e not in ESTIMATORS]
    if bad:
        raise MincapError(f"unknown estimator(s) {', '.join(bad)}; known: {', '.join(ESTIMATORS)}")
    if n_samples < 2 or bins < 1 or not noise_var > 0:
        raise MincapError("need --samples >= 2, --bins >= 1 and --noise-var > 0")
    kw = {k: v for k, v in (("n_val", tgt.n_val), ("split_seed", tgt.split_seed)) if v is not None}
    splits = load(tgt.dataset, root=data_dir, **kw)
    if tuple(splits.in_shape) != tuple(tgt.spec.in_shape) or splits.n_classes != tgt.spec.n_classes:
        raise MincapError(f"the network takes {list(tgt.spec.in_shape)} inputs and {tgt.spec.n_classes} classes; "
                          f"dataset {tgt.dataset!r} has {list(splits.in_shape)} and {splits.n_classes} (use --dataset)")
    t0 = time.perf_counter()
    idx = torch.from_numpy(sample_indices(len(splits.train), n_samples, seed))
    x, y = splits.train.x[idx], splits.train.y[idx].numpy()
    layers = layer_activations(tgt.model, x)
    rows = []
    for est in estimators:
        vals = layer_mi([lay.values for lay in layers], y, est, bins=bins, noise_var=noise_var,
                        bounds=[lay.bounds for lay in layers])
        for lay, v in zip(layers, vals):
            rows.append({"layer": lay.name, "estimator": est, "n_samples": len(y), **v})
    return InfoResult(rows=rows, layers=[{"name": lay.name, "units": lay.values.shape[1]} for lay in layers],
                      n_samples=len(y), ceiling_xt_bits=math.log2(len(y)), h_y_bits=label_entropy_bits(y),
                      dataset=tgt.dataset, bins=bins, noise_var=noise_var, sample_seed=seed,
                      time_s=time.perf_counter() - t0)


def summary_columns(res: InfoResult, estimator: str = "bin") -> dict:
    """The three numbers the ladder table shows: I(X;T_last), I(T_last;Y) (the last hidden
    layer, before the logits) and the mean successive-layer MI, by `estimator`."""
    rows = [r for r in res.rows if r["estimator"] == estimator]
    last = rows[-2] if len(rows) > 1 else rows[-1]
    nxt = [r["i_next_bits"] for r in rows if r["i_next_bits"] is not None]
    return {"i_xt_last_bits": last["i_xt_bits"], "i_ty_last_bits": last["i_ty_bits"], "last_layer": last["layer"],
            "mean_next_bits": float(np.mean(nxt)) if nxt else None}


def info_table(res: InfoResult, *, title: str = "") -> Table:
    """The rows as a rich table, the sample and the ceilings in the caption."""
    t = Table(title=title, caption=f"{res.n_samples} train images (seed {res.sample_seed}); {res.bins} bins; KDE noise "
              f"variance {res.noise_var:g}; ceilings: I(X;T) <= log2 N = {res.ceiling_xt_bits:.2f}, "
              f"I(T;Y) <= H(Y) = {res.h_y_bits:.3f} bits; {res.time_s:.1f} s")
    for col in ("layer", "units", "estimator", "I(X;T) bits", "I(T;Y) bits", "I(T;T_next) bits"):
        t.add_column(col, justify="left" if col in ("layer", "estimator") else "right")
    units = {lay["name"]: lay["units"] for lay in res.layers}
    for r in res.rows:
        t.add_row(r["layer"], f"{units[r['layer']]:,}", r["estimator"], f"{r['i_xt_bits']:.3f}", f"{r['i_ty_bits']:.3f}",
                  "-" if r["i_next_bits"] is None else f"{r['i_next_bits']:.3f}")
    return t
