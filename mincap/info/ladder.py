"""The link to minimal size: information columns for the chosen network of every rung.

For each committed summary (`studies/*.summary.json`, `studies/ladder/*.summary.json`) with
a chosen network, the network is fetched from its study's artifact store, analysed on a
seeded sample of its dataset's train split (`mincap.info.analyze`), and reduced to
I(X;T_last), I(T_last;Y) (T_last: the last hidden layer, what the output layer reads) and
the mean successive-layer MI, per estimator. `mincap.info.ladder_table` renders the rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from mincap.errors import MincapError
from mincap.info.analyze import analyze, load_target, summary_columns
from mincap.info.ladder_table import LADDER_ESTIMATORS

__all__ = ["ladder_rows", "study_file"]


def study_file(summary: str | Path, recorded: str) -> Path:
    """The study file of a summary: one of the recorded name beside the summary (a study moved
    with its summary, e.g. into studies/history/), else the recorded path."""
    beside = Path(summary).with_name(Path(recorded).name)
    return beside if beside.is_file() else Path(recorded)


def ladder_rows(summaries: list[str | Path], *, n_samples: int, bins: int, noise_var: float,
                data_dir: str | None = None, on_rung=None) -> list[dict]:
    """One row per summary with a chosen network: dataset, trial, artifact bits, columns per estimator."""
    rows = []
    for p in summaries:
        s = json.loads(Path(p).read_text())
        c = s.get("chosen")
        if not c:
            continue
        tgt = load_target(str(study_file(p, s["config"]["file"])), trial=c["trial"])
        if tgt.artifact_bits != c["artifact_bits"]:
            raise MincapError(f"{p}: trial {c['trial']} of {tgt.label} has {tgt.artifact_bits} bits, the summary "
                              f"says {c['artifact_bits']} (the study file is not the one summarized)")
        res = analyze(tgt, estimators=LADDER_ESTIMATORS, n_samples=n_samples, bins=bins, noise_var=noise_var,
                      data_dir=data_dir)
        row = {"dataset": s["dataset"], "summary": str(p), "trial": c["trial"], "artifact_bits": tgt.artifact_bits,
               "n_layers": len(res.layers), "n_samples": res.n_samples, "ceiling_xt_bits": res.ceiling_xt_bits,
               "h_y_bits": res.h_y_bits, "time_s": round(res.time_s, 1),
               "columns": {e: summary_columns(res, e) for e in LADDER_ESTIMATORS}}
        rows.append(row)
        if on_rung is not None:
            on_rung(row)
    return rows
