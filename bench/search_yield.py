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

The A/B of issue 29 (`--ab`): the per-trial arm (`--study`, the default study, seeds and all)
against the one-shot arm (`--oneshot-study`, `studies/mnist-99-oneshot.toml`, no seeds), each
from an empty storage AND an empty cache folder (`--isolate-cache`: the one-shot arm trains its
supernet inside its budget), each its own process of this script with one torch thread. By
default one after the other on every core; `--concurrent` runs them side by side, each pinned to
a core of its own (equal compute, half the wall time; the two share the memory bus, which the
JSON says). `bench/results/search_yield_ab.json` holds `arms.per_trial` and `arms.oneshot`,
each with `candidates_per_hour` (trials that ended with a decoded, scored file per hour of wall
time), `time_to_first_feasible_s` and `smallest_feasible_bits` at "15", "30" and "60" minutes,
plus the ratio of the two candidate rates and the machine's load. `--keep DIR` copies each arm's
database, artifacts and cache folder to DIR/<arm>/, so a study can go on from its first hour.

    python bench/search_yield.py --ab --concurrent --keep /tmp/ab   # both arms, one hour, one core each
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
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
ONESHOT_STUDY = "studies/mnist-99-oneshot.toml"
ARMS = ("per_trial", "oneshot")


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
    scored = sum(t.state.name == "COMPLETE" and "artifact_bits" in t.user_attrs for t in trials)
    return {
        "candidates_per_hour": round(scored / wall_s * 3600, 1) if wall_s > 0 else None,
        "candidates": scored,
        "time_to_first_feasible_s": round(feas[0][0], 1) if feas else None,
        "smallest_feasible_bits": smallest,
        "trials_by_state": states,
        "trials_screened_out": sum(t.user_attrs.get("fidelity") == "screen" for t in trials),
        "screen_decisions": screen_decisions(trials),
        "trials_per_hour": round(started / wall_s * 3600, 1) if wall_s > 0 else None,
        "budget_s": budget_s,
        "wall_s": round(wall_s, 1),
        **oneshot_figures(trials, start),
    }


def oneshot_figures(trials, start: dt.datetime) -> dict:
    """Where a one-shot search's hour went: the supernet (until the first trial started), the
    promoted trials and what their fine-tuning gave (empty for a per-trial search)."""
    shot = [t for t in trials if "oneshot" in t.user_attrs]
    if not shot:
        return {}
    first = min(t.datetime_start for t in shot if t.datetime_start)
    tuned = [t for t in shot if "finetune" in t.user_attrs]
    return {
        "supernet_s": round((first - start).total_seconds(), 1),
        "promoted": len(tuned),
        "finetune_s": round(sum(t.user_attrs["finetune"]["time_s"] for t in tuned), 1),
        "finetune_gain_points": [round(100 * (t.user_attrs["finetune"]["val_acc"] - t.user_attrs["oneshot"]["val_acc"]), 2)
                                 for t in tuned],
        "best_inherited_val_acc": max(t.user_attrs["oneshot"]["val_acc"] for t in shot),
        "best_val_acc": max(t.user_attrs.get("val_acc", 0.0) for t in shot),
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


def isolated_data(tmp: Path, data_dir: str | None) -> str:
    """A data folder in `tmp` whose datasets link to the real ones and whose cache is empty, and an
    empty per-user cache: nothing trained before (a supernet, a teacher) is found."""
    from mincap.data.registry import data_dir as default_dir

    real = [Path(p) for p in data_dir.split(":")] if data_dir else [default_dir(None), ROOT.parent / "shared" / "datasets"]
    mine = tmp / "data"
    mine.mkdir()
    for folder in real:
        for d in folder.iterdir() if folder.is_dir() else ():
            if d.is_dir() and d.name != "mincap-cache" and not (mine / d.name).exists():
                (mine / d.name).symlink_to(d.resolve())
    os.environ["XDG_CACHE_HOME"] = str(tmp / "xdg")
    return str(mine)


def run_arm(args, budget_s: float) -> tuple[dict, int]:
    """One search from an empty storage: (its report, exit code)."""
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
        data_dir = isolated_data(Path(tmp), args.data_dir) if args.isolate_cache else args.data_dir
        print(f"search_yield: study {cfg.study.name} ({args.study}) in {tmp}, budget {args.budget_min:g} min, "
              f"{args.workers} worker(s), fidelity {'on' if cfg.fidelity.enabled else 'off'}"
              f"{', one-shot' if cfg.oneshot.enabled else ''}{', empty cache' if args.isolate_cache else ''}"
              f"{f', train limit {cfg.data.limit}' if cfg.data.limit else ''}", flush=True)
        start, t0 = dt.datetime.now(), time.perf_counter()
        stop = threading.Event()
        ticker = threading.Thread(target=_progress, args=(cfg, start, budget_s, args.every_s, stop), daemon=True)
        ticker.start()
        interrupted = False
        try:
            run_search(cfg, SearchOptions(trials=10**6, timeout_s=budget_s, workers=args.workers, progress=False,
                                          data_dir=data_dir))
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: what ran so far is still reported, marked as cut short
            interrupted = True
            print("search_yield: interrupted; reporting the trials so far", file=sys.stderr, flush=True)
        finally:
            stop.set()
            ticker.join()
        wall_s = time.perf_counter() - t0
        trials = open_study(cfg, create=False).get_trials(deepcopy=False)
        report = yield_report(trials, cfg.study.target, start, budget_s, wall_s)
        if args.keep:  # the database, artifacts and cache: the study can go on from here
            shutil.copytree(tmp, args.keep, symlinks=True, dirs_exist_ok=True)
    info["load_avg_end"] = os.getloadavg()
    report.update(interrupted=interrupted, machine=info, study=cfg.study.name, study_file=str(args.study), workers=args.workers,
                  train_limit=cfg.data.limit, fidelity=cfg.fidelity.enabled, target=cfg.study.target,
                  oneshot=cfg.oneshot.enabled, isolated_cache=args.isolate_cache)
    return report, 130 if interrupted else 0


def arm_command(args, arm: str, out: Path) -> list[str]:
    study = args.oneshot_study if arm == "oneshot" else args.study
    cmd = [sys.executable, str(Path(__file__).resolve()), "--study", str(study), "--out", str(out),
           "--budget-min", f"{args.budget_min:g}", "--every-s", f"{args.every_s:g}", "--isolate-cache",
           "--workers", "1"]
    for flag, value in (("--limit", args.limit), ("--data-dir", args.data_dir),
                        ("--keep", args.keep and str(Path(args.keep) / arm))):
        if value:
            cmd += [flag, str(value)]
    return cmd + (["--no-fidelity"] if args.no_fidelity else [])


def run_ab(args) -> tuple[dict, int]:
    """Both arms, each its own process with one torch thread; one after the other, or side by side
    pinned to a core each."""
    info = machine()
    env = dict(os.environ, OMP_NUM_THREADS="1", MINCAP_THREADS="1")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    pinned = {arm: cores[i % len(cores)] for i, arm in enumerate(ARMS)}  # one core: both share it (checks)
    with tempfile.TemporaryDirectory(prefix="search_yield_ab-") as tmp:
        outs = {arm: Path(tmp) / f"{arm}.json" for arm in ARMS}
        procs, rcs = {}, {}
        for arm in ARMS:
            cmd = arm_command(args, arm, outs[arm])
            if args.concurrent:
                cmd = ["taskset", "-c", str(pinned[arm])] + cmd
            print(f"search_yield: arm {arm}: {' '.join(cmd)}", flush=True)
            procs[arm] = subprocess.Popen(cmd, env=env)
            if not args.concurrent:
                rcs[arm] = procs[arm].wait()
        for arm, p in procs.items():
            rcs[arm] = p.wait()
        arms = {arm: json.loads(outs[arm].read_text()) if outs[arm].is_file() else {"error": f"exit code {rcs[arm]}"}
                for arm in ARMS}
    info["load_avg_end"] = os.getloadavg()
    rate = [arms[a].get("candidates_per_hour") for a in ARMS]
    small = [arms[a].get("smallest_feasible_bits", {}).get(mark_key(args.budget_min)) for a in ARMS]
    report = {
        "arms": arms,
        "mode": f"concurrent: each arm one process, one torch thread, pinned to cores {pinned} (the memory bus shared)"
                if args.concurrent else "sequential: each arm one process, one torch thread, alone on the machine",
        "candidates_per_hour_ratio": round(rate[1] / rate[0], 1) if all(rate) else None,
        "oneshot_smaller_at_end": None if small[1] is None else (small[0] is None or small[1] < small[0]),
        "budget_min": args.budget_min,
        "machine": info,
    }
    return report, max(rcs.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-min", type=float, default=60.0, help="wall-clock budget in minutes (default 60)")
    ap.add_argument("--out", default=None, help="JSON output (default: bench/results/search_yield.json, "
                                                "with --ab search_yield_ab.json)")
    ap.add_argument("--study", default=str(ROOT / DEFAULT_STUDY), help="study file (default: the default study)")
    ap.add_argument("--oneshot-study", default=str(ROOT / ONESHOT_STUDY), help="--ab: the one-shot arm's study file")
    ap.add_argument("--ab", action="store_true", help="the per-trial arm (--study) against the one-shot arm")
    ap.add_argument("--concurrent", action="store_true", help="--ab: both arms at once, one core each")
    ap.add_argument("--isolate-cache", action="store_true", help="an empty cache folder (nothing trained before)")
    ap.add_argument("--keep", default=None, help="copy the storage, artifacts and cache here at the end")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N train images (quick checks)")
    ap.add_argument("--no-fidelity", action="store_true", help="turn multi-fidelity screening off (comparisons)")
    ap.add_argument("--every-s", type=float, default=60.0, help="seconds between progress lines")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    if args.budget_min <= 0:
        ap.error("--budget-min must be > 0")
    if args.out is None:
        args.out = str(ROOT / "bench" / "results" / ("search_yield_ab.json" if args.ab else "search_yield.json"))
    report, rc = run_ab(args) if args.ab else run_arm(args, args.budget_min * 60)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)
    print(f"search_yield: wrote {out}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
