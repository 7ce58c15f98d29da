"""The `mincap` command line. Heavy imports (torch, optuna) happen inside the commands,
so `mincap --help` answers instantly. Each command's defaults come from the library's
dataclasses, the single source of truth shared with the Python API.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from mincap.errors import MincapError

__all__ = ["main"]


def _defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls)}


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist", help="dataset name (default: mnist)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding e.g. MNIST/raw/*.gz (default: $MINCAP_DATA, else ~/.cache/mincap)",
    )


def _add_train(sub) -> None:
    from mincap.train import TrainConfig

    d = _defaults(TrainConfig)
    p = sub.add_parser("train", help="train one network and report its accuracy and time")
    p.add_argument("--arch", default="tiny", help="a preset name or a JSON spec (default: tiny)")
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"])
    p.add_argument("--augment", type=int, default=d["augment_shift"], help="max random shift in pixels (0: off)")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images of the train split")
    p.add_argument("--n-val", type=int, default=5000, help="validation images held out of the training set")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from mincap import data, models, train
    from mincap.report import console, epoch_progress, train_table

    arch = models.parse_arch(args.arch)  # bad input fails before any data is read
    train.setup_threads(args.threads)
    device = train.pick_device(args.device)
    splits = data.load(
        args.dataset, root=args.data_dir, n_val=args.n_val, split_seed=args.split_seed,
        limit=args.limit, device=device,
    )
    spec = arch.with_data(splits.in_shape, splits.n_classes)
    cfg = train.TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, augment_shift=args.augment, seed=args.seed,
    )
    model = train.init_model(spec, args.seed, device)
    with epoch_progress(cfg.epochs, enabled=not args.json) as on_epoch:
        result = train.train(model, splits, cfg, on_epoch=on_epoch)
    test_acc, _ = train.final_test_accuracy(model, args.dataset, root=args.data_dir)
    out = {
        "dataset": args.dataset,
        "spec": spec.to_dict(),
        "n_params": models.count_params(model),
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "epochs": len(result.history),
        "val_acc": result.val_acc,
        "test_acc": test_acc,
        "train_time_s": round(result.train_time_s, 3),
        "device": str(device),
        "config": cfg.to_dict(),
        "history": [
            {"epoch": h.epoch, "train_loss": h.train_loss, "val_acc": h.val_acc, "time_s": round(h.time_s, 3)}
            for h in result.history
        ],
    }
    if args.json:
        print(json.dumps(out))
    else:
        console().print(train_table(out))
    return 0


def _add_entropy(sub) -> None:
    from mincap.entropy import DEFAULT_BUDGET_S, DEFAULT_THRESHOLD, ESTIMATORS

    p = sub.add_parser(
        "entropy",
        help="how much information is in a dataset: entropy estimators on its training set",
        description="Estimate the information in a dataset's official training set (never the test set).",
    )
    p.add_argument("datasets", nargs="*", metavar="DATASET", help="dataset names (default: mnist)")
    p.add_argument(
        "--estimator", action="append", choices=ESTIMATORS, metavar="NAME",
        help=f"one of {', '.join(ESTIMATORS)}; repeat for several (default: all)",
    )
    p.add_argument(
        "--data-dir", default=None,
        help="folder holding e.g. MNIST/raw/*.gz (default: $MINCAP_DATA, else ~/.cache/mincap)",
    )
    p.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S,
        help=f"seconds for the prequential estimator (default: {DEFAULT_BUDGET_S:g}); once spent, "
        "the remaining chunks are coded with the last model (a longer, still valid code, not cached)",
    )
    p.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD,
        help=f"binarization for asker/pixels: a pixel is 1 when > T, 0..254 (default: {DEFAULT_THRESHOLD})",
    )
    p.add_argument("--no-cache", action="store_true", help="recompute, and do not store results")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads for prequential (default: 1; its small models ran ~5x slower "
        "with 2 threads on a shared 2-core CPU)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list on stdout and nothing else")
    p.set_defaults(func=_cmd_entropy)


def _cmd_entropy(args) -> int:
    from mincap import entropy
    from mincap.report import console

    if "prequential" in (args.estimator or entropy.ESTIMATORS):
        from mincap.train import setup_threads

        setup_threads(args.threads)
    rows = []
    for ds in args.datasets or ["mnist"]:
        for name in args.estimator or entropy.ESTIMATORS:
            est = entropy.estimate(
                ds, name, root=args.data_dir, threshold=args.threshold, budget_s=args.budget,
                use_cache=not args.no_cache, progress=not args.json,
            )
            rows.append(est.to_dict())
    if args.json:
        print(json.dumps(rows))
    else:
        from mincap.entropy.table import entropy_table

        console().print(entropy_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mincap",
        description="How small can a network be, in bits of a real file, and still reach a target accuracy?",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_entropy(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MincapError as err:
        print(f"mincap: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("mincap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
