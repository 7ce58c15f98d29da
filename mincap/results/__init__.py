"""What the studies found, for people: summaries, the ladder figures and the report.

- `summary`: one study's trials by state, Pareto front and chosen network (`mincap summary`).
- `stored`: summary JSON files: reading them, and rewriting them with nothing stored lost.
- `ladder`: the data of the figures and the report, loaded from studies or summary JSON files.
- `figures`: matplotlib drawing of that data (`mincap plot`).
- `markdown`: the report, studies/RESULTS.md.
- `capacity`, `locality`: the data of issue 17's experiments (Fano's bound, MacKay's prediction;
  the four locality cells); `theory_figures` draws them, `theory` writes their report section.

Names are re-exported lazily, as `mincap` does: `mincap summary` imports
`mincap.results.summary`, and must not pay for matplotlib through this package.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "chosen_trial": "mincap.results.summary",
    "summarize": "mincap.results.summary",
    "summary_tables": "mincap.results.summary",
    "test_accuracy_once": "mincap.results.summary",
    "config_of": "mincap.results.stored",
    "load_summary": "mincap.results.stored",
    "merge": "mincap.results.stored",
    "read_summary": "mincap.results.stored",
    "summary_path": "mincap.results.stored",
    "write_summary": "mincap.results.stored",
    "ANCHORS": "mincap.results.ladder",
    "CHEAP_ESTIMATORS": "mincap.results.ladder",
    "LEARNER": "mincap.results.ladder",
    "MACKAY_FLOAT_BITS": "mincap.results.ladder",
    "LadderInfo": "mincap.results.ladder",
    "ParetoInfo": "mincap.results.ladder",
    "cpu_time_s": "mincap.results.ladder",
    "entropy_x": "mincap.results.ladder",
    "ladder_info": "mincap.results.ladder",
    "load_rungs": "mincap.results.ladder",
    "machine_description": "mincap.results.ladder",
    "pareto_info": "mincap.results.ladder",
    "report_rows": "mincap.results.ladder",
    "save_summaries": "mincap.results.ladder",
    "spec_short": "mincap.report",
    "draw_ladder": "mincap.results.figures",
    "draw_pareto": "mincap.results.figures",
    "pareto_path": "mincap.results.figures",
    "plot_ladder": "mincap.results.figures",
    "plot_pareto": "mincap.results.figures",
    "report_markdown": "mincap.results.markdown",
    "capacity_info": "mincap.results.capacity",
    "fano_bound_bits": "mincap.results.capacity",
    "mackay_weights": "mincap.results.capacity",
    "locality_info": "mincap.results.locality",
    "draw_capacity": "mincap.results.theory_figures",
    "draw_locality": "mincap.results.theory_figures",
    "theory_section": "mincap.results.theory",
    "write_report": "mincap.results.markdown",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mincap.results' has no attribute {name!r}")
