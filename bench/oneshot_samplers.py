"""Which sampler for one-shot trials (issue 29, item 6): TPE, GPSampler and NSGA-II at equal counts.

Each run is one in-memory Optuna study of `--trials` one-shot trials (`OneshotObjective`, promotion
OFF: each trial one sub-network of the cached supernet, written, decoded and scored on
validation, about a second) with a throwaway artifact store, for each sampler and each of
`--seeds` sampler seeds, the runs interleaved (seed 0 of every sampler, then seed 1, ...) so that
the machine's load falls on all alike. The samplers:

* `tpe`: multivariate grouped TPE with the constant liar and 8 start-up trials (mincap's
  `make_sampler`);
* `gp`: `optuna.samplers.GPSampler`, constrained multi-objective (8 start-up trials,
  deterministic objective: the same configuration scores the same);
* `nsga2`: NSGA-II, population 16 (mincap's `make_sampler`).

The constraint: the objective sets `Trial.set_constraint("val_acc_target", target - val)` and
the old "constraints" system attribute (as every mincap trial); Optuna 5 samplers read both
through `FrozenTrial.constraints`, so none needs `constraints_func` (deprecated since 5.0).
`--constraints-func` passes one anyway, reading that system attribute, for older Optuna.

Measured per run: the hypervolume of the FEASIBLE front (val >= target) in (bits, error 1 - val),
both minimized, from the reference point (`--ref-bits`, default 20,000, and 1 - target + 0.03),
and also at the relaxed thresholds target - 0.01 and target - 0.02 (one-shot accuracies sit
2-4 points below from-scratch ones, so few one-shot trials reach the target); the smallest
file at >= target, >= target - 0.01 and >= target - 0.02; the wall time per trial. Per sampler:
mean and standard error over the seeds (a smallest-bits figure over the seeds that reached it,
with how many did). Writes `bench/results/oneshot_samplers.json` after every run and prints a
table. Nothing reads the test set.

    taskset -c 1 env OMP_NUM_THREADS=1 MINCAP_THREADS=1 python bench/oneshot_samplers.py \\
        --data /tmp/os/data:/work/shared/datasets --epochs 20 --trials 150 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oneshot_ranking import (  # noqa: E402  (a bench script beside this one)
    ROOT,
    add_supernet_args,
    load_splits,
    load_supernet,
    machine,
    study_parts,
    supernet_record,
)

from mincap.errors import MincapError  # noqa: E402
from mincap.oneshot.trial import OneshotObjective  # noqa: E402
from mincap.training.engine import setup_threads  # noqa: E402

SAMPLERS = ("tpe", "gp", "nsga2")
RELAX = (0.0, 0.01, 0.02, 0.03, 0.04)  # thresholds: target - each


def constraints_from_attrs(trial) -> list[float]:
    """The trial's "constraints" system attribute, as mincap's objectives write it."""
    return list(trial.system_attrs.get("constraints") or [1.0])


def make_sampler(name: str, seed: int, with_func: bool = False):
    kw = {"constraints_func": constraints_from_attrs} if with_func else {}
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True,
                                          group=True, constant_liar=True, **kw)
    if name == "gp":
        # The depth makes the space dynamic: GPSampler draws the parameters outside the common
        # space (the deeper blocks' widths and bits) at random, which it warns about per trial.
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8,
                                         deterministic_objective=True,
                                         warn_independent_sampling=False, **kw)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16, **kw)
    raise SystemExit(f"oneshot bench: unknown sampler {name!r} (one of {', '.join(SAMPLERS)})")


def hypervolume(points, threshold: float, ref: tuple[float, float]) -> float:
    """2-D hypervolume of the points (bits, val) with val >= threshold, in (bits, 1 - val) both
    minimized, dominated region bounded by `ref` = (bits, error)."""
    pts = sorted((b, 1.0 - v) for b, v in points if v >= threshold and b < ref[0] and 1 - v < ref[1])
    hv, best_err = 0.0, ref[1]
    for i, (b, e) in enumerate(pts):  # sweep by bits: each point adds the strip until the next
        if e < best_err:
            best_err = e
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref[0]
        hv += (nxt - b) * (ref[1] - best_err)
    return hv


def smallest_bits(points, threshold: float) -> int | None:
    bits = [b for b, v in points if v >= threshold]
    return int(min(bits)) if bits else None


def mean_se(values) -> dict:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "se": None, "n": 0}
    sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return {"mean": round(float(np.mean(vals)), 4), "se": round(sd / math.sqrt(len(vals)), 4),
            "n": len(vals)}


def one_run(name: str, seed: int, n_trials: int, run, splits, settings, with_func: bool) -> dict:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)  # constraints_func, when asked
    with tempfile.TemporaryDirectory(prefix="oneshot-samplers-") as tmp:
        store = FileSystemArtifactStore(tmp)
        study = optuna.create_study(directions=["minimize", "maximize"],
                                    storage=optuna.storages.InMemoryStorage(),
                                    sampler=make_sampler(name, seed, with_func))
        objective = OneshotObjective(run, splits, store, settings)
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=n_trials, catch=(Exception,))
        wall = time.perf_counter() - t0
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    points = [(float(t.values[0]), float(t.values[1])) for t in done]
    constrained = sum(bool(t.constraints) for t in done)
    return {"sampler": name, "seed": seed, "trials": len(study.trials), "complete": len(done),
            "with_constraints": constrained, "points": [[int(b), round(v, 4)] for b, v in points],
            "wall_s": round(wall, 1), "s_per_trial": round(wall / max(1, len(study.trials)), 3)}


def tag(d: float) -> str:
    return "target" if d == 0 else f"target-{d:g}"


def ref_point(ref_bits: float, threshold: float) -> tuple[float, float]:
    """The reference point of a threshold: `ref_bits`, and an error 3 points above the threshold's
    (at the target itself: (20,000, 1 - target + 0.03))."""
    return ref_bits, round(1 - threshold + 0.03, 6)


def measure(r: dict, target: float, ref_bits: float, relax=RELAX) -> dict:
    pts = [tuple(p) for p in r["points"]]
    m = {}
    for d in relax:
        th = target - d
        m[f"hv@{tag(d)}"] = round(hypervolume(pts, th, ref_point(ref_bits, th)), 3)
        m[f"smallest_bits@{tag(d)}"] = smallest_bits(pts, th)
        m[f"n_at@{tag(d)}"] = sum(v >= th for _, v in pts)
    m["best_val"] = round(max((v for _, v in pts), default=float("nan")), 4)
    return m


def aggregate(runs: list[dict]) -> dict:
    out = {}
    for name in dict.fromkeys(r["sampler"] for r in runs):
        rs = [r for r in runs if r["sampler"] == name]
        keys = [k for k in rs[0]["metrics"] if k.startswith(("hv@", "smallest_bits@", "n_at@"))]
        out[name] = {k: mean_se(r["metrics"][k] for r in rs) for k in keys}
        out[name]["best_val"] = mean_se(r["metrics"]["best_val"] for r in rs)
        out[name]["s_per_trial"] = mean_se(r["s_per_trial"] for r in rs)
        out[name]["seeds"] = [r["seed"] for r in rs]
    return out


def print_table(agg: dict, relax=RELAX) -> None:
    cols = [(f"{k}@{tag(d)}", f"{h}@{'t' if d == 0 else f't-{d:g}'}")
            for k, h in (("hv", "HV"), ("smallest_bits", "bits")) for d in relax]
    cols += [("best_val", "best val"), ("s_per_trial", "s/trial")]
    print("mean ± SE over the seeds; (n): seeds that reached the threshold")
    print(f"{'sampler':8}" + "".join(f"{h:>21}" for _, h in cols))
    for name, a in agg.items():
        cells = []
        for k, _ in cols:
            s = a[k]
            if s["mean"] is None:
                cells.append(f"{'-':>21}")
            else:
                n = f" ({s['n']})" if k.startswith("smallest") else ""
                cells.append(f"{s['mean']:.4g} ±{s['se']:.3g}{n}".rjust(21))
        print(f"{name:8}" + "".join(cells))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_supernet_args(p)
    p.add_argument("--trials", type=int, default=150, help="trials per run (equal for all)")
    p.add_argument("--seeds", type=int, default=3, help="sampler seeds per sampler")
    p.add_argument("--seed-base", type=int, default=0, help="the first sampler seed")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated subset")
    p.add_argument("--target", type=float, help="feasibility target (default: the settings')")
    p.add_argument("--ref-bits", type=float, default=20000.0, help="hypervolume reference bits")
    p.add_argument("--relax", default=",".join(f"{d:g}" for d in RELAX),
                   help="thresholds below the target to measure at (comma-separated)")
    p.add_argument("--constraints-func", action="store_true",
                   help="also pass constraints_func (deprecated in Optuna 5; not needed there)")
    p.add_argument("--out", default=str(ROOT / "bench/results/oneshot_samplers.json"))
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    setup_threads()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, recipe, settings, split = study_parts(args)
    target = settings.target if args.target is None else args.target
    settings = replace(settings, target=target, promote=False)
    splits = load_splits(args, split)
    run, found = load_supernet(args, splits, space, recipe, split)
    ref = ref_point(args.ref_bits, target)
    relax = tuple(float(d) for d in args.relax.split(","))
    names = [s.strip() for s in args.samplers.split(",") if s.strip()]
    for n in names:
        make_sampler(n, 0)  # unknown names fail before any trial
    print(f"supernet {found['key']} ({found['how']}); {args.trials} trials x {args.seeds} seeds "
          f"x {names}; reference point {ref}", flush=True)
    runs, t_start = [], time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    for s in range(args.seed_base, args.seed_base + args.seeds):
        for name in names:
            r = one_run(name, s, args.trials, run, splits, settings, args.constraints_func)
            r["metrics"] = measure(r, target, args.ref_bits, relax)
            runs.append(r)
            m = r["metrics"]
            print(f"  {name:6} seed {s}: {r['complete']}/{r['trials']} complete, "
                  f"{r['s_per_trial']:.2f} s/trial, best val {m['best_val']:.4f}, HV "
                  + " / ".join(f"{m['hv@' + tag(d)]:.1f}" for d in relax) + ", smallest bits "
                  + " / ".join(str(m["smallest_bits@" + tag(d)]) for d in relax), flush=True)
            result = {
                "bench": "oneshot_samplers", "issue": 29,
                "what": "TPE vs GPSampler vs NSGA-II on one-shot trials (promotion off), equal "
                        "trial counts, several sampler seeds; hypervolume of the feasible front",
                "trials_per_run": args.trials, "seeds": list(range(args.seed_base, s + 1)),
                "target": target, "reference_point": {"bits": ref[0], "error": ref[1]},
                "thresholds": {tag(d): {"val_acc": round(target - d, 4),
                                        "reference_point": ref_point(args.ref_bits, target - d)}
                               for d in relax},
                "hypervolume": "2-D, (bits, 1 - val) minimized, points with val >= threshold; "
                               "reference (ref_bits, 1 - threshold + 0.03)",
                "constraints": "Trial.set_constraint + 'constraints' system attr (objective); "
                               + ("constraints_func passed too" if args.constraints_func else
                                  "no constraints_func (Optuna 5 samplers read "
                                  "FrozenTrial.constraints)"),
                "samplers": {"tpe": "TPESampler(n_startup_trials=8, multivariate, group, "
                                    "constant_liar)",
                             "gp": "GPSampler(n_startup_trials=8, deterministic_objective); the "
                                   "depth-dependent parameters fall back to random sampling",
                             "nsga2": "NSGAIISampler(population_size=16)"},
                "supernet": supernet_record(run, found, run.net.space),
                "settings": settings.to_dict(), "split": split,
                "summary": aggregate(runs), "runs": runs,
                "complete": False, "wall_s": round(time.perf_counter() - t_start, 1),
                "machine": machine(load_start),
            }
            out.write_text(json.dumps(result, indent=1) + "\n")
    result["complete"] = True
    out.write_text(json.dumps(result, indent=1) + "\n")
    print()
    print_table(result["summary"], relax)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    try:
        main()
    except MincapError as err:
        sys.exit(f"oneshot bench: {err}")
