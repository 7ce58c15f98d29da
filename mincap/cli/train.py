"""`mincap train`, `mincap verify`, `mincap entropy`: one network or one dataset."""

from __future__ import annotations

import argparse
import json
import sys

from mincap.cli.args import add_data_args, add_data_dir, defaults

__all__ = ["add_entropy", "add_train", "add_verify"]


def add_train(sub) -> None:
    from mincap.config import TrainConfig

    d = defaults(TrainConfig)
    p = sub.add_parser("train", help="train one network and report its accuracy and time")
    p.add_argument("--arch", default="tiny", help="a preset name or a JSON spec (default: tiny)")
    add_data_args(p)
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
    p.add_argument("--test", action="store_true",
                   help="also evaluate the final network on the test set (a report, not for choosing; "
                        "without it the test set is never read)")
    a = p.add_argument_group("geometric augmentation after the shift, 0: off "
                             "(see mincap.training.augment)")
    for key, var, help_ in (
        ("rotate_deg", "R", "rotation uniform in [-R, R] degrees"),
        ("scale_frac", "S", "scale factor uniform in [1 - S, 1 + S]"),
        ("shear_deg", "A", "horizontal shear uniform in [-A, A] degrees"),
        ("translate_px", "T", "sub-pixel translation uniform in [-T, T] pixels per axis"),
        ("elastic_alpha", "PX", "elastic distortion strength in pixels (Simard et al.: 34)"),
        ("elastic_sigma", "PX", "the elastic field's smoothing in pixels (default: %(default)s)"),
    ):
        a.add_argument("--" + key.replace("_", "-"), type=float, default=d[key], metavar=var,
                       help=help_)
    g = p.add_argument_group("distillation (see mincap.training.distill)")
    g.add_argument("--teacher", default=None, metavar="ARCH",
                   help="distill from this teacher (a preset or JSON spec), trained once per dataset/split/recipe "
                        "on the train split and cached")
    g.add_argument("--teacher-epochs", type=int, default=15, help="the teacher's training epochs (default: 15)")
    g.add_argument("--distill-weight", type=float, default=0.5, help="weight of the soft targets (default: 0.5)")
    g.add_argument("--distill-temperature", type=float, default=d["distill_temperature"])
    _add_compress_args(p)
    p.set_defaults(func=_cmd_train)


def _bits_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated bit widths, got {text!r}") from None


def _add_compress_args(p: argparse.ArgumentParser) -> None:
    from mincap.config import CRITERIA, QUANTIZERS, CompressConfig

    d = defaults(CompressConfig)
    g = p.add_argument_group("compression (writes a .mincap artifact; see mincap.compression.qat)")
    bits = g.add_mutually_exclusive_group()
    bits.add_argument("--bits", type=int, default=None, help="weight bit width 1..8 for every conv/linear layer")
    bits.add_argument("--bits-per-layer", type=_bits_list, default=None, metavar="B1,B2,...",
                      help="one bit width per conv/linear layer, in order (0 = float32)")
    g.add_argument("--per-layer-scale", action="store_true", help="one scale per layer instead of per channel")
    g.add_argument("--asymmetric", action="store_true", help="asymmetric quantization with zero points")
    g.add_argument("--qat-epochs", type=int, default=d["qat_epochs"],
                   help="last epochs trained with fake quantization (default: %(default)s)")
    g.add_argument("--prune", type=float, default=d["prune_ratio"], metavar="RATIO",
                   help="fraction of channels/neurons removed by torch-pruning")
    g.add_argument("--prune-steps", type=int, default=d["prune_steps"])
    g.add_argument("--prune-criterion", choices=CRITERIA, default=d["prune_criterion"])
    g.add_argument("--finetune-epochs", type=int, default=d["prune_finetune_epochs"],
                   help="fine-tuning epochs after each pruning step, after sparsifying and after each --path step")
    g.add_argument("--sparsity", type=float, default=d["sparsity"],
                   help="fraction of each layer's weights zeroed by magnitude (paid for in the file)")
    g.add_argument("--quantizer", choices=QUANTIZERS, default=d["quantizer"],
                   help="max: max|w| scales; mse: MSE-optimal per-channel clipping; lsq: learned step sizes "
                        "(default: %(default)s)")
    g.add_argument("--anneal-epochs", type=int, default=d["anneal_epochs"],
                   help="first QAT epochs at widths stepping from 8 bits down to the target")
    g.add_argument("--prune-global", action="store_true", help="rank channels across layers (global pruning)")
    g.add_argument("--prune-min-channels", type=int, default=d["prune_min_channels"],
                   help="channels every pruned layer keeps (default: %(default)s)")
    g.add_argument("--path", default=None, metavar="STEPS",
                   help="a compression path after training: ';'-separated steps, each 'prune=R', "
                        "'sparsity=S' and/or 'bits=B' (comma-joined), e.g. 'sparsity=0.3;sparsity=0.5;bits=2' "
                        "(see mincap.compression.path); every step is exported, decoded and evaluated on validation")
    g.add_argument("--target", type=float, default=None,
                   help="with --path: the validation accuracy the chosen (smallest) step must reach")
    g.add_argument("--path-dir", default=None, metavar="DIR", help="with --path: write every step's .mincap here")
    g.add_argument("-o", "--output", default=None, metavar="FILE.mincap", help="write the artifact here")


def _compress_requested(args) -> bool:
    return bool(args.output or args.bits is not None or args.bits_per_layer or args.prune or args.sparsity
                or args.path)


def _cmd_train(args) -> int:
    from mincap.config import CompressConfig, TrainConfig
    from mincap.report import console, epoch_progress, size_table, train_table
    from mincap.training.experiment import (
        Experiment,
        NoStepReachesTarget,
        load_experiment,
        run_experiment,
        total_epochs,
    )

    comp = None
    if _compress_requested(args):
        comp = CompressConfig(
            bits=args.bits, bits_per_layer=args.bits_per_layer, per_channel=not args.per_layer_scale,
            symmetric=not args.asymmetric, qat_epochs=args.qat_epochs, prune_ratio=args.prune,
            prune_steps=args.prune_steps, prune_criterion=args.prune_criterion,
            prune_finetune_epochs=args.finetune_epochs, sparsity=args.sparsity, quantizer=args.quantizer,
            anneal_epochs=args.anneal_epochs, prune_global=args.prune_global,
            prune_min_channels=args.prune_min_channels,
        )
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, augment_shift=args.augment, seed=args.seed,
        distill_weight=args.distill_weight if args.teacher else 0.0, distill_temperature=args.distill_temperature,
        rotate_deg=args.rotate_deg, scale_frac=args.scale_frac, shear_deg=args.shear_deg,
        translate_px=args.translate_px, elastic_alpha=args.elastic_alpha,
        elastic_sigma=args.elastic_sigma,
    )
    exp = Experiment(
        arch=args.arch, dataset=args.dataset, data_dir=args.data_dir, n_val=args.n_val, split_seed=args.split_seed,
        limit=args.limit, device=args.device, threads=args.threads, train=cfg, compress=comp, path=args.path,
        target=args.target, path_dir=args.path_dir, teacher=args.teacher, teacher_epochs=args.teacher_epochs,
        output=args.output, test=args.test,
    )
    loaded = load_experiment(exp, verbose=not args.json)  # a missing dataset: one line, no progress bar
    try:
        with epoch_progress(total_epochs(exp), enabled=not args.json) as on_epoch:
            out = run_experiment(exp, loaded, on_epoch=on_epoch)
    except NoStepReachesTarget as miss:
        if args.json:  # the record of every step still comes out; no artifact is written
            print(json.dumps(miss.record))
        else:
            _print_path(miss.record)
        raise
    if args.json:
        print(json.dumps(out))
        return 0
    if out.get("memorization"):
        print(f"mincap: {out['memorization']}", file=sys.stderr)
    _print_path(out)
    if "test_acc" in out:
        print(f"mincap: test accuracy {out['test_acc']:.4f} -- {out['test_note']}", file=sys.stderr)
    console().print(train_table(out))
    if "artifact_bits" in out:
        console().print(size_table(out))
    return 0


def _print_path(out: dict) -> None:
    for s in out.get("path", []):
        mark = " <- chosen" if s["index"] == out.get("chosen_step") else ""
        print(f"  step {s['index']}: {s['description']}: {s['artifact_bits']:,} bits, val {s['val_acc']:.4f}{mark}",
              file=sys.stderr)


def add_entropy(sub) -> None:
    from mincap.entropy.base import DEFAULT_BUDGETS_S, DEFAULT_THRESHOLD, ESTIMATORS

    p = sub.add_parser(
        "entropy",
        help="how much information is in a dataset: entropy estimators on its training set",
        description="Estimate the information in a dataset's official training set (never the test set).",
    )
    p.add_argument("datasets", nargs="*", metavar="DATASET", help="dataset names (default: mnist)")
    p.add_argument(
        "--estimator", action="append", choices=ESTIMATORS, metavar="NAME",
        help=f"one of {', '.join(ESTIMATORS)}; repeat for several (default: all but prequential-switch, "
        "which trains three models per chunk)",
    )
    add_data_dir(p)
    p.add_argument(
        "--budget", type=float, default=-1.0,
        help="seconds for a prequential estimator (default: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_BUDGETS_S.items())
        + "); once spent, the remaining chunks are coded with the last models (a longer, still valid code, "
        "not cached)",
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

    names = args.estimator or [e for e in entropy.ESTIMATORS if e != "prequential-switch"]
    if set(names) & set(entropy.PREQUENTIAL_ESTIMATORS):
        from mincap.training.engine import setup_threads

        setup_threads(args.threads)
    rows = []
    for ds in args.datasets or ["mnist"]:
        for name in names:
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


def add_verify(sub) -> None:
    from mincap.config import DEFAULT_N_VAL, DEFAULT_SPLIT_SEED

    p = sub.add_parser("verify", help="decode a .mincap artifact, rebuild the network, report its size and "
                                      "validation and test accuracy")
    p.add_argument("file", metavar="FILE.mincap")
    add_data_args(p)
    p.add_argument("--n-val", type=int, default=DEFAULT_N_VAL,
                   help="validation images held out of the training set, as the studies split it "
                        "(default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED, help="(default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no-test", action="store_true",
                   help="read no test image: size and validation accuracy only (while still choosing)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from mincap.evaluation.verify import verify_file
    from mincap.report import console, size_table
    from mincap.training.engine import setup_threads

    setup_threads(args.threads)
    out = verify_file(args.file, dataset=args.dataset, data_dir=args.data_dir, n_val=args.n_val,
                      split_seed=args.split_seed, test=not args.no_test)
    if args.json:
        print(json.dumps(out))
    else:
        console().print(size_table(out))
    return 0
