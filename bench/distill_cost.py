"""What distillation costs per training step: a student epoch with and without a teacher forward.

mincap.training.distill runs the teacher on every augmented batch (soft targets of the shifted
images the student sees) instead of precomputing logits of unshifted images. This
prints the time of one epoch of the student alone, with the teacher's forward, and
the ratio, so the choice can be re-measured on any machine.

    python bench/distill_cost.py [--student tiny] [--teacher small] [--limit 10000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="tiny")
    ap.add_argument("--teacher", default="small")
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    from mincap import data
    from mincap.nets import models
    from mincap.training import engine as train

    train.setup_threads(args.threads)
    splits = data.load("mnist", root=args.data_dir, limit=args.limit)
    spec = models.parse_arch(args.student)
    teacher = train.init_model(models.parse_arch(args.teacher), 1).eval()  # untrained: same cost
    cfg = train.TrainConfig(epochs=1)
    times = {}
    for name, t, w in (("student alone", None, 0.0), ("with teacher forward", teacher, 0.5)):
        model = train.init_model(spec, 0)
        t0 = time.perf_counter()
        train.train(model, splits, train.TrainConfig(**{**cfg.to_dict(), "distill_weight": w}), teacher=t)
        times[name] = time.perf_counter() - t0
        print(f"{name:>22}: {times[name]:.2f} s for one epoch of {len(splits.train):,} images")
    print(f"ratio: {times['with teacher forward'] / times['student alone']:.2f}x "
          f"({args.student} student, {args.teacher} teacher, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
