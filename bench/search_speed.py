"""Search throughput: the same seeded set of trials trained the straightforward way and the fast ways.

Trial settings are sampled from the default study's space (`mincap.search.sample_trial`,
a seeded `RandomSampler` on an in-memory Optuna study) with the number of epochs fixed;
only the float training phase is timed (the part every trial spends most of its time in).

(a) sequential: one after another with `mincap.training.engine.train` in this process (all cores);
(b) the fast ways, in the same run (`--fast`, comma-separated):
    batched  `mincap.training.batched.train_many`: trials of one layer structure in one max-width
             masked computation (grouped convs; data on the device, cuda when present);
    workers  `--workers` spawned processes of one torch thread each, every one training
             whole trials with `mincap.training.engine.train` (the data loaded once per process).
Prints trials per hour for each, the ratio to (a), and the largest validation-accuracy
difference from (a) per trial (same seeds; float noise only, checked against `--acc-tol`).

Random architectures rarely share a layer structure, so `--structures K` draws K structures
and gives trial i the structure of trial i mod K (its own widths, learning rate, decay,
augmentation, batch size of that structure, seed): the case of a search that asks its
sampler for groups. `--structures 0` keeps every trial as sampled.

`--first-99` also trains the `tiny` preset with the default recipe on the full train split
and prints the time until its validation accuracy first reaches 99%, stopping there (the test
set is never read: stopping on it would be choosing on it). It takes minutes.

    python bench/search_speed.py [--trials 16] [--epochs 2] [--limit N] [--fast batched,workers]
    python bench/search_speed.py --limit 1000 --trials 4 --epochs 1 --threads 1   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path


def sample_settings(n: int, epochs: int, seed: int, structures: int, in_shape, n_classes):
    """`n` (spec, TrainConfig) pairs from the default study's space, reproducible for `seed`."""
    import optuna

    from mincap.config.study import StudyConfig, load_study_file
    from mincap.search import sample_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The default study's space (studies/mnist-99.toml), the dataclass defaults outside a checkout.
    default = Path(__file__).resolve().parent.parent / "studies" / "mnist-99.toml"
    cfg = load_study_file(default) if default.exists() else StudyConfig()
    study = optuna.create_study(directions=["minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    params, structural = [], []
    for _ in range(n):
        t = study.ask()
        names: list[str] = []
        sample_trial(t, cfg, in_shape, n_classes, structural=names)
        params.append(dict(t.params))
        structural.append(names)
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    out = []
    for i, p in enumerate(params):
        if structures > 0:
            src = params[i % structures]
            p = {**src, **p, **{k: src[k] for k in structural[i % structures]}}
        fixed = optuna.trial.FixedTrial(p, number=i)
        spec, tcfg, _ = sample_trial(fixed, cfg, in_shape, n_classes)
        out.append((spec, replace(tcfg, epochs=epochs)))
    return out


def run_sequential(settings, splits):
    from mincap.training.engine import init_model, train

    accs, t0 = [], time.perf_counter()
    for spec, cfg in settings:
        model = init_model(spec, cfg.seed)
        accs.append(train(model, splits, cfg).val_acc)
    return accs, time.perf_counter() - t0


def run_batched(settings, splits, device):
    from mincap.training.batched import group_trials, train_many

    specs = [s for s, _ in settings]
    cfgs = [c for _, c in settings]
    groups = group_trials(specs, cfgs)
    t0 = time.perf_counter()
    outs = train_many(specs, splits.to(device), cfgs, device=device)
    return [o.result.val_acc if o.error is None else float("nan") for o in outs], time.perf_counter() - t0, groups


_worker_splits = None


def _worker_init(data_dir, limit):  # pragma: no cover - child process
    global _worker_splits
    from mincap import data
    from mincap.training.engine import setup_threads

    setup_threads(1)
    _worker_splits = data.load("mnist", root=data_dir, limit=limit or None)


def _worker_trial(job):  # pragma: no cover - child process
    from mincap.config import TrainConfig
    from mincap.nets.models import Spec
    from mincap.training.engine import init_model, train

    spec_json, cfg_dict = job
    spec = Spec.from_json(spec_json)
    cfg = TrainConfig(**cfg_dict)
    model = init_model(spec, cfg.seed)
    return train(model, _worker_splits, cfg).val_acc


def run_workers(settings, n_workers: int, data_dir, limit):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(s.to_json(), c.to_dict()) for s, c in settings]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(data_dir, limit)) as pool:
        accs = list(pool.map(_worker_trial, jobs))
    return accs, time.perf_counter() - t0


def first_99(splits, max_epochs: int, target: float = 0.99):
    """Seconds until the `tiny` preset's validation accuracy first reaches `target`, training
    stopped there (None if it does not within `max_epochs`). Validation only: the accuracy it
    stops on is the one `train` measures on `splits.val` after every epoch."""
    from mincap.config import TrainConfig
    from mincap.nets.models import PRESETS
    from mincap.training.engine import init_model, train

    model = init_model(PRESETS["tiny"], 0)
    t0 = time.perf_counter()
    found: dict[str, float] = {}

    def on_epoch(stats):
        print(f"  tiny epoch {stats.epoch}: val {stats.val_acc:.4f}", flush=True)
        if stats.val_acc >= target and "s" not in found:
            found.update(s=time.perf_counter() - t0, epoch=stats.epoch, val=stats.val_acc)
            return True
        return False

    train(model, splits, TrainConfig(epochs=max_epochs), on_epoch=on_epoch)
    return found or None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N train images (0: all 55,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--structures", type=int, default=4)
    ap.add_argument("--fast", default="batched,workers")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads of this process (0: all cores)")
    ap.add_argument("--device", default="auto", help="device of the batched way (auto: cuda if present)")
    ap.add_argument("--acc-tol", type=float, default=0.01)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--first-99", action="store_true")
    ap.add_argument("--first-99-epochs", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from mincap import data
    from mincap.training.engine import pick_device, setup_threads

    threads = setup_threads(args.threads or None)
    device = pick_device(args.device)
    splits = data.load("mnist", root=args.data_dir, limit=args.limit or None)
    settings = sample_settings(args.trials, args.epochs, args.seed, args.structures, splits.in_shape,
                               splits.n_classes)
    n_train = len(splits.train)
    print(f"{args.trials} trials x {args.epochs} epochs on {n_train} images; {threads} thread(s); "
          f"{os.cpu_count()} cores; batched device {device}", flush=True)
    for i, (s, c) in enumerate(settings):
        print(f"  trial {i}: {s.to_json()} bs {c.batch_size} lr {c.lr:.4f} shift {c.augment_shift}", flush=True)

    report: dict = {"trials": args.trials, "epochs": args.epochs, "n_train": n_train, "threads": threads}
    acc_a, t_a = run_sequential(settings, splits)
    rate_a = args.trials / t_a * 3600
    report["sequential"] = {"s": t_a, "trials_per_hour": rate_a, "val_acc": acc_a}
    print(f"(a) sequential      {t_a:8.1f} s  {rate_a:9.1f} trials/h", flush=True)
    ok = True
    for way in [w.strip() for w in args.fast.split(",") if w.strip()]:
        if way == "batched":
            acc_b, t_b, groups = run_batched(settings, splits, device)
            extra = f"  groups {[len(g) for g in groups]}"
        elif way == "workers":
            acc_b, t_b = run_workers(settings, args.workers, args.data_dir, args.limit)
            extra = f"  {args.workers} processes x 1 thread"
        else:
            raise SystemExit(f"--fast: unknown way {way!r} (batched, workers)")
        rate_b = args.trials / t_b * 3600
        diff = max(abs(a - b) for a, b in zip(acc_a, acc_b))
        same = diff <= args.acc_tol
        ok &= same
        report[way] = {"s": t_b, "trials_per_hour": rate_b, "ratio": rate_b / rate_a, "val_acc": acc_b,
                       "max_abs_val_acc_diff": diff, "within_tol": same}
        print(f"(b) {way:15s} {t_b:8.1f} s  {rate_b:9.1f} trials/h  x{rate_b / rate_a:.2f}  "
              f"max |val acc diff| {diff:.4f} ({'ok' if same else 'OVER'} tol {args.acc_tol}){extra}", flush=True)
    if args.first_99:
        full = data.load("mnist", root=args.data_dir)
        found = first_99(full, args.first_99_epochs)
        report["first_99"] = found
        print("time to first >= 99% validation network (tiny, sequential): "
              + (f"{found['s']:.1f} s (epoch {found['epoch']}, val {found['val']:.4f})" if found else "not reached"))
    if args.json:
        print(json.dumps(report))
    if not ok:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
