"""Weight tying, measured before it is built (issue 30): one separable block applied r times
against r separable blocks of their own, at equal stored bits, by mincap's own training.

The two networks (MNIST 28x28, no padding, GAP head, batch norm after every block):

* untied: `mincap.nets.models` spec -- a plain 3x3 conv of C0 channels and a 2x2 max pool, then
  `--blocks` depthwise-separable 3x3 blocks of C channels (the default study's family);
* tied: the same plain conv (C0 = C) and pool, then ONE depthwise-separable 3x3 block of C -> C
  channels applied `--blocks` times with the same weights; each application keeps its own batch
  norm (Lin, Tegmark & Rolnick's and Hodas & Stinis's argument: the weights, not the
  normalisation, repeat).

What a file would store, counted as `mincap.format` counts it (weights at `--bits`, side numbers
at `--side-bits`): every conv/linear weight once (a tied block's once), and per output channel of
each layer a scale and a bias -- for the tied block per application, since its batch norm folds
into a per-application scale and bias that cannot fold into the shared weights. The tied width is
the largest C whose stored bits do not exceed the untied network's. Each network trains
`--epochs` epochs (float; the engine's one-cycle AdamW and shift augmentation) for each seed, by
`mincap.training.engine.train` on the train split, and is scored on validation (5,000 images);
the test set is never read. One run per (kind, seed) is appended to `--out` as it finishes, so a
stopped probe resumes where it stopped (runs already in the file are skipped).

    taskset -c 1 env OMP_NUM_THREADS=1 python bench/tying_probe.py              # 3 seeds x 80 epochs
    python bench/tying_probe.py --epochs 1 --limit 1000 --out /tmp/tying.json   # smoke check

Two processes, one a core, each `--kinds` one network and its own `--out`; then merge the second
file's runs into the first and run the probe once more with every seed: nothing is left to train,
so it only rewrites the summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent


class TiedSeparable(nn.Module):
    """A plain 3x3 conv of C channels, a 2x2 pool, then one separable block applied `r` times."""

    def __init__(self, c: int, r: int, in_ch: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.r = r
        self.stem = nn.Sequential(nn.Conv2d(in_ch, c, 3, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2))
        self.dw = nn.Conv2d(c, c, 3, groups=c)  # shared by every application
        self.pw = nn.Conv2d(c, c, 1, bias=False)  # shared
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(r))  # one per application
        self.head = nn.Linear(c, n_classes)

    def forward(self, x):
        x = self.stem(x)
        for bn in self.bns:
            x = torch.relu(bn(self.pw(self.dw(x))))
        return self.head(x.mean(dim=(2, 3)))


def untied_spec(c0: int, c: int, blocks: int):
    from mincap.nets.models import Conv, Spec

    return Spec(family="cnn", convs=(Conv(c0, 3, pool=2), *(Conv(c, 3, separable=True) for _ in range(blocks))),
                batch_norm=True, head="gap")


def stored_untied(c0: int, c: int, blocks: int, n_classes: int = 10) -> tuple[int, int]:
    """(weights, side numbers) of the untied network's file: per layer its weights, and per output
    channel a scale and a bias (the batch norm folded)."""
    w, side = 9 * c0, 2 * c0
    cin = c0
    for _ in range(blocks):
        w += 9 * cin + cin * c  # depthwise, pointwise
        side += 2 * cin + 2 * c
        cin = c
    return w + c * n_classes, side + 2 * n_classes


def stored_tied(c: int, blocks: int, n_classes: int = 10) -> tuple[int, int]:
    """(weights, side numbers) of the tied network's file: the shared block's weights once, its
    depthwise scale and bias once, its pointwise scale and bias (the batch norm folded) per
    application."""
    w = 9 * c + 9 * c + c * c + c * n_classes
    side = 2 * c + 2 * c + 2 * c * blocks + 2 * n_classes
    return w, side


def bits_of(counts: tuple[int, int], bits: int, side_bits: int) -> int:
    return counts[0] * bits + counts[1] * side_bits


def tied_width(target_bits: int, blocks: int, bits: int, side_bits: int) -> int:
    """The widest tied network whose stored bits do not exceed `target_bits`."""
    c = 1
    while bits_of(stored_tied(c + 1, blocks), bits, side_bits) <= target_bits:
        c += 1
    return c


def mean_se(xs: list[float]) -> dict:
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None
    return {"mean": statistics.fmean(xs), "se": se, "n": len(xs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--c", type=int, default=12, help="the untied blocks' width (default 12)")
    ap.add_argument("--c0", type=int, default=8, help="the untied first conv's width (default 8)")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--bits", type=int, default=4, help="weight bits of the size count")
    ap.add_argument("--side-bits", type=int, default=6, help="side-number bits of the size count")
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--kinds", default="untied,tied", help="which networks to train (two processes: one each)")
    ap.add_argument("--limit", type=int, default=0, help="train on the first N train images (checks)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "tying_probe.json"))
    args = ap.parse_args(argv)

    from mincap import data
    from mincap.config import TrainConfig
    from mincap.nets.models import build, count_params
    from mincap.training.engine import setup_threads, train

    setup_threads()
    seeds = [int(s) for s in args.seeds.split(",")]
    untied_bits = bits_of(stored_untied(args.c0, args.c, args.blocks), args.bits, args.side_bits)
    ct = tied_width(untied_bits, args.blocks, args.bits, args.side_bits)
    kinds = {
        "untied": {"width": args.c, "c0": args.c0, "stored_bits": untied_bits,
                   "stored": stored_untied(args.c0, args.c, args.blocks)},
        "tied": {"width": ct, "c0": ct, "stored_bits": bits_of(stored_tied(ct, args.blocks), args.bits, args.side_bits),
                 "stored": stored_tied(ct, args.blocks)},
    }
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    setup = {"blocks": args.blocks, "epochs": args.epochs, "bits": args.bits, "side_bits": args.side_bits,
             "c": args.c, "c0": args.c0, "limit": args.limit or None}
    runs = old.get("runs", []) if old.get("setup") == setup else []
    done = {(r["kind"], r["seed"]) for r in runs}
    splits = data.load("mnist", root=args.data_dir, n_val=5000, split_seed=0, limit=args.limit or None)
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
               "torch": torch.__version__, "load_avg_start": os.getloadavg()}

    def save() -> None:
        summary = {k: {**v, "val_acc": mean_se([r["val_acc"] for r in runs if r["kind"] == k]) if
                       any(r["kind"] == k for r in runs) else None} for k, v in kinds.items()}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"bench": "tying_probe", "issue": 30, "setup": setup, "kinds": summary,
                                   "runs": runs, "machine": {**machine, "load_avg_end": os.getloadavg()},
                                   "written": datetime.datetime.now().isoformat(timespec="seconds")}, indent=2) + "\n")

    for seed in seeds:
        for kind in kinds:
            if (kind, seed) in done or kind not in args.kinds.split(","):
                continue
            torch.manual_seed(seed)
            model = build(untied_spec(args.c0, args.c, args.blocks)) if kind == "untied" \
                else TiedSeparable(ct, args.blocks)
            res = train(model, splits, TrainConfig(epochs=args.epochs, seed=seed))
            runs.append({"kind": kind, "seed": seed, "val_acc": res.val_acc, "params": count_params(model),
                         "train_time_s": round(res.train_time_s, 1)})
            print(f"tying_probe: {kind} C={kinds[kind]['width']} seed {seed}: val {100 * runs[-1]['val_acc']:.2f}% "
                  f"({runs[-1]['train_time_s']:.0f} s)", flush=True)
            save()
    save()
    for k, v in json.loads(out.read_text())["kinds"].items():
        acc = v["val_acc"]
        se = f" +- {100 * acc['se']:.2f}" if acc and acc["se"] is not None else ""
        print(f"tying_probe: {k:6s} C={v['width']:2d}  {v['stored_bits']:,} stored bits  "
              f"val {100 * acc['mean']:.2f}%{se} over {acc['n']} seeds" if acc else f"tying_probe: {k}: no runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
