"""What augmentation costs per epoch: sep-1.8k with no augmentation, the shift, and the warps.

mincap.training.augment distorts every batch on the device (a random affine map and/or an elastic
field, one `grid_sample`); the shift is the engine's integer gather. This trains the same network
for `--epochs` epochs with each setting, in one run, the settings interleaved round by round
(`--repeats`), and prints seconds per epoch (validation pass included, the same for every
setting) as CPU time of this process and as wall time, the fastest round of each, their ratios to
no augmentation, and the augmentation op's own CPU time per batch, with its parts. On a CPU shared
with other jobs the wall time swings with their load; with one thread the process's CPU time
swings much less, so the ratios to read are the CPU ones. Writes the figures, the machine and its
load average to `--out`.

    taskset -c 1 env OMP_NUM_THREADS=1 python bench/augment_cost.py --epochs 1   # [--limit N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

AFFINE = {"rotate_deg": 10.0, "scale_frac": 0.1, "shear_deg": 10.0, "translate_px": 2.0}
ELASTIC = {"elastic_alpha": 34.0, "elastic_sigma": 4.0}  # Simard et al. 2003's MNIST setting
SETTINGS = {
    "none": {"augment_shift": 0},
    "shift": {"augment_shift": 1},
    "affine": {"augment_shift": 0, **AFFINE},
    "elastic": {"augment_shift": 0, **ELASTIC},
    "affine+elastic": {"augment_shift": 0, **AFFINE, **ELASTIC},
}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _clock(device) -> float:
    """CPU time of this process on the CPU (robust to other jobs' load), wall time on a GPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def _op_ms(kw: dict, bs: int, device, n: int = 100) -> dict[str, float]:
    """The augmentation op alone, milliseconds per batch of `bs` 28x28 images: all of it and, for
    a warp, its parts (affine matrices + `F.affine_grid`, the elastic field, `F.grid_sample`)."""
    import torch
    import torch.nn.functional as F

    from mincap.config import TrainConfig
    from mincap.training import augment
    from mincap.training.engine import _shift

    cfg = TrainConfig(**kw)
    warp = augment.Warp.from_config(cfg)
    if not cfg.augment_shift and not warp.active:
        return {"total": 0.0}
    x = torch.rand(bs, 1, 28, 28, device=device)
    gen, wgen = torch.Generator().manual_seed(0), augment.warp_generator(0)

    def timed(f) -> float:
        f()
        t0 = _clock(device)
        for _ in range(n):
            f()
        return round((_clock(device) - t0) / n * 1e3, 3)

    def whole():
        y = _shift(x, cfg.augment_shift, gen) if cfg.augment_shift else x
        return augment.augment(y, warp, wgen) if warp.active else y

    def affine():
        theta = augment.affine_matrices(warp, bs, 28, 28, wgen).to(device, torch.float32)
        return F.affine_grid(theta, [bs, 1, 28, 28], align_corners=False)

    out = {"total": timed(whole)}
    if warp.active:
        grid = augment.sampling_grid(warp, bs, 28, 28, wgen, device)
        out["affine_grid"] = timed(affine)
        if warp.elastic:
            out["elastic_field"] = timed(
                lambda: augment.elastic_field(warp, bs, 28, 28, wgen, device)
            )
        out["grid_sample"] = timed(lambda: augment.resample(x, grid))
    return out


def _parts(op: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in op.items() if k != "total")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sep-1.8k")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument(
        "--limit",
        type=int,
        default=0,
        help="train on the first N images of the 55,000-image train split (0: all)",
    )
    ap.add_argument("--repeats", type=int, default=2, help="rounds over all settings")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="bench/results/augment_cost.json")
    args = ap.parse_args()

    import torch

    from mincap import data
    from mincap.config import TrainConfig
    from mincap.nets import models
    from mincap.training import engine

    load_start = os.getloadavg()
    engine.setup_threads(args.threads)
    device = engine.pick_device(args.device)
    splits = data.load("mnist", root=args.data_dir, limit=args.limit or None)
    spec = models.parse_arch(args.arch)
    n_train = len(splits.train)
    if args.limit:
        subset = f"a subset: the first {n_train:,} of the 55,000 train images"
    else:
        subset = "all 55,000 train images"
    steps = n_train // min(args.batch_size, n_train)
    print(
        f"{args.arch}, {args.epochs} epoch(s) of {subset} ({steps} batches of {args.batch_size}), "
        f"validation on {len(splits.val):,} images included, {args.threads} thread(s), {device}, "
        f"load average {load_start[0]:.2f} at the start",
        flush=True,
    )
    # Warm-up, untimed: the first training of a process pays for kernel selection and allocation.
    warm = data.Splits(
        splits.name,
        data.Split(splits.train.x[:512], splits.train.y[:512]),
        data.Split(splits.val.x[:512], splits.val.y[:512]),
        splits.n_classes,
    )
    for kw in SETTINGS.values():
        engine.train(engine.init_model(spec, 0, device), warm, TrainConfig(epochs=1, **kw))
    cpu: dict[str, list[float]] = {k: [] for k in SETTINGS}
    wall: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for r in range(args.repeats):
        for name, kw in SETTINGS.items():
            cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=0, **kw)
            model = engine.init_model(spec, 0, device)
            c0 = _clock(device)
            res = engine.train(model, splits, cfg)
            cpu[name].append((_clock(device) - c0) / args.epochs)
            wall[name].append(res.train_time_s / args.epochs)
            print(
                f"  round {r + 1}: {name:>15}: {cpu[name][-1]:6.2f} s/epoch CPU, "
                f"{wall[name][-1]:6.2f} s wall, val {res.val_acc:.4f}",
                flush=True,
            )
    ops = {name: _op_ms(kw, args.batch_size, device) for name, kw in SETTINGS.items()}
    load_end = os.getloadavg()
    base, base_wall = min(cpu["none"]), min(wall["none"])
    rows = []
    print(
        f"\n{'setting':>15} {'CPU s/epoch':>12} {'ratio':>6} {'wall s/epoch':>13} {'ratio':>6} "
        f"{'op ms/batch':>12}  (CPU ms: parts)"
    )
    for name in SETTINGS:
        best, best_wall = min(cpu[name]), min(wall[name])
        rows.append(
            {
                "setting": name,
                "config": SETTINGS[name],
                "cpu_s_per_epoch": round(best, 3),
                "cpu_s_per_epoch_all": [round(t, 3) for t in cpu[name]],
                "ratio_to_none": round(best / base, 3),
                "wall_s_per_epoch": round(best_wall, 3),
                "wall_s_per_epoch_all": [round(t, 3) for t in wall[name]],
                "wall_s_per_epoch_median": round(statistics.median(wall[name]), 3),
                "wall_ratio_to_none": round(best_wall / base_wall, 3),
                "op_ms_per_batch": ops[name],
            }
        )
        print(
            f"{name:>15} {best:12.2f} {best / base:6.2f} {best_wall:13.2f} "
            f"{best_wall / base_wall:6.2f} {ops[name]['total']:12.2f}  {_parts(ops[name])}"
        )
    print(
        "load average "
        + " / ".join(f"{v:.2f}" for v in load_start)
        + " at the start, "
        + " / ".join(f"{v:.2f}" for v in load_end)
        + " at the end (other workers share this machine)"
    )
    out = {
        "arch": args.arch,
        "epochs": args.epochs,
        "n_train": n_train,
        "subset": subset,
        "n_val": len(splits.val),
        "batch_size": args.batch_size,
        "batches_per_epoch": steps,
        "repeats": args.repeats,
        "timing": "fastest round; seconds per epoch, validation pass included, as CPU time of "
        "this process (ratio_to_none) and as wall time; op_ms_per_batch in CPU time",
        "results": rows,
        "machine": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "device": str(device),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_avg_start": list(load_start),
            "load_avg_end": list(load_end),
            "note": "other workers share this machine; see load_avg and affinity",
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
