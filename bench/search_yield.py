"""Search yield: what the default study finds from an empty storage in a wall-clock budget.

Copies the study file (default `studies/mnist-99.toml`) into a temporary folder, so the
search starts from an empty SQLite database and artifact folder there (the study's own
database is never touched), runs `mincap search` on it for `--budget-min` minutes of
wall time (default 60) with `--workers` processes, printing a progress line every
`--every-s` seconds, and writes JSON to `--out`:

    time_to_first_feasible_s  seconds from the start until the first trial that reaches the
                              target on validation completed (null: none did)
    smallest_feasible_bits    {"15": ..., "30": ..., "60": ...}: the smallest feasible artifact
                              so far at each minute mark (null: none yet); for another budget
                              the marks are a quarter, a half and all of it ("0.5", "1", "2")
    trials_by_state           trial counts by Optuna state (PRUNED includes screened-out trials)
    screen_decisions          screened trials promoted / stopped by rank / stopped below the floor
    trials_per_hour           started trials per hour of wall time
    budget_s, machine         the budget, and cores / torch / load average before and after
                              (the load says whether the machine was shared)

`--limit N` trains on the first N train images and `--no-fidelity` turns screening off:
quick checks and before/after comparisons, not the figure the issue asks for.

    python bench/search_yield.py                      # the one-hour measurement
    python bench/search_yield.py --budget-min 2 --limit 2000 --out /tmp/yield.json   # smoke check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

from mincap.config.study import DEFAULT_STUDY, StudyConfig, load_study_file
from mincap.search import SearchOptions, open_study, run_search

ROOT = Path(__file__).resolve().parent.parent


def minute_marks(budget_min: float) -> list[float]:
    """A quarter, a half and all of the budget: 15, 30, 60 for the hour."""
    return [budget_min / 4, budget_min / 2, budget_min]


def mark_key(minutes: float) -> str:
    return f"{minutes:g}"


def feasible_times(trials, target: float, start: dt.datetime) -> list[tuple[float, int]]:
    """(seconds from `start` to completion, artifact bits) of every trial feasible on validation."""
    out = []
    for t in trials:
        a = t.user_attrs
        if t.state.name == "COMPLETE" and a.get("val_acc", 0.0) >= target and t.datetime_complete:
            out.append(((t.datetime_complete - start).total_seconds(), int(a["artifact_bits"])))
    return sorted(out)


def screen_decisions(trials) -> dict[str, int]:
    """How screening decided: promoted, stopped by Pareto rank, stopped below `min_val_acc`."""
    out = {"promoted": 0, "stopped_rank": 0, "stopped_floor": 0}
    for t in trials:
        why = t.user_attrs.get("screen_decision", "")
        if why:
            kind = "stopped_floor" if "min_val_acc" in why else "stopped_rank" if why.startswith("stopped") \
                else "promoted"
            out[kind] += 1
    return out


def yield_report(trials, target: float, start: dt.datetime, budget_s: float, wall_s: float) -> dict:
    """The measured figures (everything but `machine`) from a finished search's trials."""
    feas = feasible_times(trials, target, start)
    smallest = {}
    for m in minute_marks(budget_s / 60):
        bits = [b for s, b in feas if s <= m * 60]
        smallest[mark_key(m)] = min(bits) if bits else None
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    started = sum(n for s, n in states.items() if s != "WAITING")
    return {
        "time_to_first_feasible_s": round(feas[0][0], 1) if feas else None,
        "smallest_feasible_bits": smallest,
        "trials_by_state": states,
        "trials_screened_out": sum(t.user_attrs.get("fidelity") == "screen" for t in trials),
        "screen_decisions": screen_decisions(trials),
        "trials_per_hour": round(started / wall_s * 3600, 1) if wall_s > 0 else None,
        "budget_s": budget_s,
        "wall_s": round(wall_s, 1),
    }


def _progress(cfg: StudyConfig, start: dt.datetime, budget_s: float, every_s: float, stop: threading.Event) -> None:
    """Print one line every `every_s` seconds, read from the study's storage."""
    while not stop.wait(every_s):
        try:
            trials = open_study(cfg, create=False).get_trials(deepcopy=False)
        except Exception as err:  # noqa: BLE001 - a busy or not-yet-created database: say so, try again
            print(f"search_yield: storage not readable yet ({type(err).__name__})", flush=True)
            continue
        elapsed = (dt.datetime.now() - start).total_seconds()
        r = yield_report(trials, cfg.study.target, start, budget_s, elapsed)
        feas = feasible_times(trials, cfg.study.target, start)
        first = f"{r['time_to_first_feasible_s'] / 60:.1f} min" if feas else "none yet"
        best = f"{min(b for _, b in feas):,} bits" if feas else "-"
        print(f"search_yield: {elapsed / 60:5.1f}/{budget_s / 60:g} min  trials {r['trials_by_state']}  "
              f"first feasible {first}  smallest feasible {best}", flush=True)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(), "load_avg_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-min", type=float, default=60.0, help="wall-clock budget in minutes (default 60)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "search_yield.json"))
    ap.add_argument("--study", default=str(ROOT / DEFAULT_STUDY), help="study file (default: the default study)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N train images (quick checks)")
    ap.add_argument("--no-fidelity", action="store_true", help="turn multi-fidelity screening off (comparisons)")
    ap.add_argument("--every-s", type=float, default=60.0, help="seconds between progress lines")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    if args.budget_min <= 0:
        ap.error("--budget-min must be > 0")
    budget_s = args.budget_min * 60
    info = machine()
    with tempfile.TemporaryDirectory(prefix="search_yield-") as tmp:
        copy = Path(tmp) / Path(args.study).name
        shutil.copyfile(args.study, copy)
        cfg = load_study_file(copy)
        # An empty storage and artifact folder in the temporary folder, whatever the file names.
        cfg = replace(cfg, storage=replace(cfg.storage, url="", artifacts=""),
                      data=replace(cfg.data, limit=args.limit or cfg.data.limit))
        if args.no_fidelity:
            cfg = replace(cfg, fidelity=replace(cfg.fidelity, enabled=False))
        print(f"search_yield: study {cfg.study.name} ({args.study}) in {tmp}, budget {args.budget_min:g} min, "
              f"{args.workers} worker(s), fidelity {'on' if cfg.fidelity.enabled else 'off'}"
              f"{f', train limit {cfg.data.limit}' if cfg.data.limit else ''}", flush=True)
        start, t0 = dt.datetime.now(), time.perf_counter()
        stop = threading.Event()
        ticker = threading.Thread(target=_progress, args=(cfg, start, budget_s, args.every_s, stop), daemon=True)
        ticker.start()
        interrupted = False
        try:
            run_search(cfg, SearchOptions(trials=10**6, timeout_s=budget_s, workers=args.workers, progress=False,
                                          data_dir=args.data_dir))
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: what ran so far is still reported, marked as cut short
            interrupted = True
            print("search_yield: interrupted; reporting the trials so far", file=sys.stderr, flush=True)
        finally:
            stop.set()
            ticker.join()
        wall_s = time.perf_counter() - t0
        trials = open_study(cfg, create=False).get_trials(deepcopy=False)
        report = yield_report(trials, cfg.study.target, start, budget_s, wall_s)
    info["load_avg_end"] = os.getloadavg()
    report.update(interrupted=interrupted, machine=info, study=cfg.study.name, study_file=str(args.study), workers=args.workers,
                  train_limit=cfg.data.limit, fidelity=cfg.fidelity.enabled, target=cfg.study.target)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)
    print(f"search_yield: wrote {out}", file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
