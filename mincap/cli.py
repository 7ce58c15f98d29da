"""The `mincap` command line. Heavy imports (torch, optuna) happen inside the commands,
so `mincap --help` answers instantly. Each command's defaults come from the library's
dataclasses, the single source of truth shared with the Python API.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from mincap.errors import MincapError, Terminated

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
    p.add_argument("--test", action="store_true",
                   help="also evaluate the final network on the test set (a report, not for choosing; "
                        "without it the test set is never read)")
    g = p.add_argument_group("distillation (see mincap.distill)")
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
    from mincap.compress import CRITERIA, CompressConfig

    d = _defaults(CompressConfig)
    g = p.add_argument_group("compression (writes a .mincap artifact; see mincap.compress)")
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
    from mincap.quant import METHODS

    g.add_argument("--quantizer", choices=METHODS, default=d["quantizer"],
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
                        "(see mincap.path); every step is exported, decoded and evaluated on validation")
    g.add_argument("--target", type=float, default=None,
                   help="with --path: the validation accuracy the chosen (smallest) step must reach")
    g.add_argument("--path-dir", default=None, metavar="DIR", help="with --path: write every step's .mincap here")
    g.add_argument("-o", "--output", default=None, metavar="FILE.mincap", help="write the artifact here")


def _compress_requested(args) -> bool:
    return bool(args.output or args.bits is not None or args.bits_per_layer or args.prune or args.sparsity
                or args.path)


def _history(history) -> list[dict]:
    return [{"epoch": h.epoch, "train_loss": h.train_loss, "val_acc": h.val_acc, "time_s": round(h.time_s, 3)}
            for h in history]


def _report_test(args, model, out: dict) -> None:
    """Test accuracy only with --test: a report on a finished network, never a basis for a choice."""
    from mincap import train

    if args.test:
        out["test_acc"], _ = train.final_test_accuracy(model, args.dataset, root=args.data_dir)
        out["test_note"] = "test accuracy is a report on this finished network, not for choosing among runs"
        if not args.json:
            print(f"mincap: test accuracy {out['test_acc']:.4f} -- {out['test_note']}", file=sys.stderr)


def _cmd_train_compressed(args, splits, spec, cfg, device, teacher) -> int:
    from mincap import artifact
    from mincap.artifact import decode
    from mincap.compress import CompressConfig, train_compressed
    from mincap.path import compression_path, parse_steps
    from mincap.report import console, epoch_progress, size_table, train_table

    comp = CompressConfig(
        bits=args.bits, bits_per_layer=args.bits_per_layer, per_channel=not args.per_layer_scale,
        symmetric=not args.asymmetric, qat_epochs=args.qat_epochs, prune_ratio=args.prune,
        prune_steps=args.prune_steps, prune_criterion=args.prune_criterion,
        prune_finetune_epochs=args.finetune_epochs, sparsity=args.sparsity, quantizer=args.quantizer,
        anneal_epochs=args.anneal_epochs, prune_global=args.prune_global,
        prune_min_channels=args.prune_min_channels,
    )
    if args.output and not args.output.endswith(".mincap"):
        raise MincapError(f"-o: the artifact file must end in .mincap, got {args.output}")
    steps = parse_steps(args.path) if args.path else None
    if (args.target is not None or args.path_dir) and steps is None:
        raise MincapError("--target and --path-dir need --path")
    extra = comp.prune_steps * comp.prune_finetune_epochs * (comp.prune_ratio > 0)
    extra += comp.prune_finetune_epochs * ((comp.sparsity > 0) + len(steps or []))
    out: dict = {"dataset": args.dataset}
    with epoch_progress(cfg.epochs + extra, enabled=not args.json) as on_epoch:
        if steps is None:
            res = train_compressed(spec, splits, cfg, comp, on_epoch=on_epoch, device=device, teacher=teacher)
            data, model, size, val_acc, final_spec = res.artifact, res.model, res.size, res.val_acc, res.spec
            history, train_time_s = res.history, res.train_time_s
            out.update(qat_val_acc=res.qat_val_acc, pruned=[{str(k): v for k, v in p.items()} for p in res.pruned])
        else:
            path = compression_path(spec, splits, cfg, comp, steps=steps, target=args.target, on_epoch=on_epoch,
                                    device=device, teacher=teacher)
            chosen = path.chosen or (path.steps[-1] if args.target is None else None)
            out["path"] = [{**s.to_dict(), "removed": {str(k): v for k, v in s.removed.items()}}
                           for s in path.steps]
            out["target"] = args.target
            out["chosen_step"] = None if chosen is None else chosen.index
            if args.path_dir:
                for s in path.steps:
                    artifact.write(f"{args.path_dir}/step{s.index}.mincap", s.artifact)
            if chosen is None:
                if args.json:  # the record of every step still comes out; no artifact is written
                    out.update(train_time_s=round(path.train_time_s, 3), history=_history(path.history))
                    print(json.dumps(out))
                else:
                    for s in path.steps:
                        print(f"  step {s.index}: {s.description}: {s.artifact_bits:,} bits, val {s.val_acc:.4f}",
                              file=sys.stderr)
                raise MincapError(f"no step of the path reaches --target {args.target} on validation "
                                  f"(best {max(s.val_acc for s in path.steps):.4f}); nothing written")
            dec = decode(chosen.artifact)
            data, model, size, val_acc, final_spec = chosen.artifact, dec.model, dec.size, chosen.val_acc, dec.spec
            history, train_time_s = path.history, path.train_time_s
    if args.output:
        artifact.write(args.output, data)
    out.update({
        "spec": final_spec.to_dict(),
        "n_params": size["n_params"],
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "epochs": len(history),
        "val_acc": val_acc,
        "train_time_s": round(train_time_s, 3),
        "device": str(device),
        "config": cfg.to_dict(),
        "compress": {k: (list(v) if isinstance(v, tuple) else v) for k, v in comp.__dict__.items()},
        "teacher": None if teacher is None else {"arch": args.teacher, "epochs": args.teacher_epochs,
                                                 "val_acc": teacher.val_acc},
        "artifact": args.output,
        **{k: size[k] for k in ("artifact_bits", "n_nonzero", "nominal_bits")},
        "layers": size["layers"],
        "history": _history(history),
    })
    _report_test(args, model.to(device), out)
    if args.json:
        print(json.dumps(out))
    else:
        if "path" in out:
            for s in out["path"]:
                mark = " <- chosen" if s["index"] == out["chosen_step"] else ""
                print(f"  step {s['index']}: {s['description']}: {s['artifact_bits']:,} bits, "
                      f"val {s['val_acc']:.4f}{mark}", file=sys.stderr)
        console().print(train_table(out))
        console().print(size_table(out))
    return 0


def _cmd_train(args) -> int:
    from mincap import data, models, train
    from mincap.report import console, epoch_progress, train_table

    arch = models.parse_arch(args.arch)  # bad input fails before any data is read
    if args.teacher:
        from mincap.distill import check_distill

        models.parse_arch(args.teacher)
        check_distill(args.distill_weight, args.distill_temperature)
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
        distill_weight=args.distill_weight if args.teacher else 0.0, distill_temperature=args.distill_temperature,
    )
    teacher = None
    if args.teacher:
        from mincap.distill import get_teacher

        teacher = get_teacher(args.teacher, splits, epochs=args.teacher_epochs, n_val=args.n_val,
                              split_seed=args.split_seed, limit=args.limit, root=args.data_dir, device=device,
                              verbose=not args.json)
    if _compress_requested(args):
        return _cmd_train_compressed(args, splits, spec, cfg, device, teacher)
    model = train.init_model(spec, args.seed, device)
    with epoch_progress(cfg.epochs, enabled=not args.json) as on_epoch:
        result = train.train(model, splits, cfg, on_epoch=on_epoch, teacher=teacher)
    out = {
        "dataset": args.dataset,
        "spec": spec.to_dict(),
        "n_params": models.count_params(model),
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "epochs": len(result.history),
        "val_acc": result.val_acc,
        "train_time_s": round(result.train_time_s, 3),
        "device": str(device),
        "config": cfg.to_dict(),
        "history": _history(result.history),
    }
    _report_test(args, model, out)
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


def _add_verify(sub) -> None:
    from mincap.data import DEFAULT_N_VAL, DEFAULT_SPLIT_SEED

    p = sub.add_parser("verify", help="decode a .mincap artifact, rebuild the network, report its size and "
                                      "validation and test accuracy")
    p.add_argument("file", metavar="FILE.mincap")
    _add_data_args(p)
    p.add_argument("--n-val", type=int, default=DEFAULT_N_VAL,
                   help="validation images held out of the training set, as the studies split it "
                        "(default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED, help="(default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from mincap import artifact, data, train
    from mincap.report import console, size_table

    dec = artifact.decode(artifact.read(args.file))
    train.setup_threads(args.threads)
    splits = data.load(args.dataset, root=args.data_dir, n_val=args.n_val, split_seed=args.split_seed)
    if tuple(splits.in_shape) != tuple(dec.spec.in_shape) or splits.n_classes != dec.spec.n_classes:
        raise MincapError(f"{args.file}: the network takes {dec.spec.in_shape} inputs and {dec.spec.n_classes} "
                          f"classes, {args.dataset} has {splits.in_shape} and {splits.n_classes}")
    val_acc, _ = train.evaluate(dec.model, splits.val)
    test_acc, _ = train.final_test_accuracy(dec.model, args.dataset, root=args.data_dir)
    out = {
        "file": args.file,
        "dataset": args.dataset,
        "spec": dec.spec.to_dict(),
        "n_val": len(splits.val),
        "split_seed": args.split_seed,
        "val_acc": val_acc,
        "test_acc": test_acc,
        **{k: v for k, v in dec.size.items()},
    }
    if args.json:
        print(json.dumps(out))
    else:
        console().print(size_table(out))
    return 0


def _duration(text: str) -> float:
    """Seconds from '90', '90s', '30m', '2h' or '1.5h'."""
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 30m or 2h, got {text!r}") from None


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_file", nargs="?", default="studies/mnist-99.toml",
                   help="TOML study file (default: studies/mnist-99.toml)")
    p.add_argument("--storage", default=None, help="any Optuna storage URL (default: from the study file)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding e.g. MNIST/raw/*.gz (default: $MINCAP_DATA, else ~/.cache/mincap)")


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="run or resume an Optuna study for the smallest network reaching the target")
    _add_study_args(p)
    p.add_argument("--trials", type=int, default=None, help="trials to run now (default: the study's budget)")
    p.add_argument("--timeout", type=_duration, default=None, help="wall-time budget, e.g. 30m or 2h")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the study")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--batch-trials", type=int, default=0, metavar="N",
                   help="train up to N like-shaped trials as one batched computation "
                        "(default 0 = automatic: 8 on CUDA, 1 on CPU where it measured slower)")
    p.add_argument("--no-progress", action="store_true", help="no live display")
    p.set_defaults(func=_cmd_search)


def _cmd_search(args) -> int:
    from mincap.search import SearchOptions, run_search
    from mincap.study import load_study_file

    cfg = load_study_file(args.study_file)
    opts = SearchOptions(trials=args.trials, timeout_s=args.timeout, storage_url=args.storage,
                         workers=args.workers, device=args.device, batch_trials=args.batch_trials,
                         data_dir=args.data_dir,
                         progress=not args.no_progress)
    res = run_search(cfg, opts)
    print(f"mincap search: {res['trials_total'] - res['trials_before']} trial(s) run in "
          f"{res['elapsed_s']:.0f} s; the study now has {res['trials_total']}. "
          f"See: mincap summary {args.study_file}", file=sys.stderr)
    return 0


def _add_summary(sub) -> None:
    p = sub.add_parser("summary", help="trials, Pareto front and the chosen network of a study")
    _add_study_args(p)
    p.add_argument("--study", default=None, help="study name (default: from the study file)")
    p.add_argument("--no-test", action="store_true", help="do not evaluate the chosen network on the test set")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.set_defaults(func=_cmd_summary)


def _study_cfg(args):
    from dataclasses import replace

    from mincap.study import load_study_file

    cfg = load_study_file(args.study_file)
    if getattr(args, "study", None):
        cfg = replace(cfg, study=replace(cfg.study, name=args.study))
    return cfg


def _cmd_summary(args) -> int:
    from mincap.report import console
    from mincap.search import open_study
    from mincap.summary import summarize, summary_tables

    cfg = _study_cfg(args)
    study = open_study(cfg, url=args.storage, create=False)
    s = summarize(study, target=cfg.study.target, dataset=cfg.study.dataset, artifacts_dir=cfg.artifacts_dir,
                  data_dir=args.data_dir, evaluate_test=not args.no_test)
    if args.json:
        print(json.dumps(s))
    else:
        console().print(summary_tables(s))
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a study trial's artifact (default: the chosen network) to a file")
    _add_study_args(p)
    p.add_argument("--trial", type=int, default=None, help="trial number (default: the chosen network)")
    p.add_argument("-o", "--output", required=True, help="FILE.mincap to write")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from optuna.artifacts import FileSystemArtifactStore, download_artifact

    from mincap.search import open_study
    from mincap.summary import chosen_trial

    cfg = _study_cfg(args)
    study = open_study(cfg, url=args.storage, create=False)
    if args.trial is None:
        trial = chosen_trial(study, cfg.study.target)
        if trial is None:
            raise MincapError(f"study {cfg.study.name!r} has no trial reaching the target on validation yet")
    else:
        trials = [t for t in study.get_trials(deepcopy=False) if t.number == args.trial]
        if not trials or "artifact_id" not in trials[0].user_attrs:
            raise MincapError(f"trial {args.trial} of {cfg.study.name!r} has no artifact (not complete?)")
        trial = trials[0]
    download_artifact(artifact_store=FileSystemArtifactStore(str(cfg.artifacts_dir)), file_path=args.output,
                      artifact_id=trial.user_attrs["artifact_id"])
    print(f"wrote {args.output}: trial {trial.number}, {trial.user_attrs['artifact_bits']:,} bits", file=sys.stderr)
    return 0


def _add_plot(sub) -> None:
    from mincap.entropy import ESTIMATORS

    p = sub.add_parser(
        "plot", help="entropy vs smallest network over studies (the dataset ladder), Pareto fronts, report",
        description="Figure 1 (-o FILE.png|.svg): each study's dataset entropy estimate (X) against its chosen "
        "network's artifact bits (Y). Figure 2 (FILE-pareto.png): each study's Pareto front with its target. "
        "Studies are read live from study files (.toml) or from summary JSON files (mincap summary --json).",
    )
    p.add_argument("inputs", nargs="*", metavar="STUDY",
                   help="study files (.toml) or summary files (.json); default: studies/mnist-99.toml and studies/ladder/*.toml")
    p.add_argument("--from-json", action="append", metavar="DIR", default=None,
                   help="read every DIR/*.summary.json (repeatable)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="prequential", metavar="NAME",
                   help=f"entropy estimate on X, one of {', '.join(ESTIMATORS)} (default: prequential)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.png", help="figure 1 (.png or .svg)")
    p.add_argument("--report", default=None, metavar="FILE.md", help="also write the markdown report here")
    p.add_argument("--save-json", action="store_true",
                   help="write <study>.summary.json beside each study file read live")
    p.add_argument("--no-test", action="store_true", help="do not evaluate chosen networks on the test set")
    p.add_argument("--no-compute", action="store_true",
                   help="never compute a missing entropy estimate (default: compute asker/pixels/labels)")
    p.add_argument("--machine", default=None, help="the machine that ran the searches, for the report")
    p.add_argument("--data-dir", default=None,
                   help="folder holding e.g. MNIST/raw/*.gz (default: $MINCAP_DATA, else ~/.cache/mincap)")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args) -> int:
    import glob

    from mincap import plot

    if not args.output.endswith((".png", ".svg")):
        raise MincapError(f"-o: the figure must end in .png or .svg, got {args.output}")
    inputs = args.inputs or ([] if args.from_json else ["studies/mnist-99.toml", *sorted(glob.glob("studies/ladder/*.toml"))])
    rungs = plot.load_rungs(inputs, args.from_json, data_dir=args.data_dir, evaluate_test=not args.no_test,
                            save_json=args.save_json)
    drawn = plot.plot_ladder(rungs, args.output, estimator=args.estimator, data_dir=args.data_dir,
                             compute=not args.no_compute)
    pareto = plot.pareto_path(args.output)
    plot.plot_pareto(rungs, pareto)
    print(f"wrote {args.output} ({len(drawn['points'])} of {len(rungs)} studies placed) and {pareto}",
          file=sys.stderr)
    for name, why in drawn["skipped"].items():
        hint = f"; run: mincap entropy {name} --estimator {args.estimator}" if "estimate" in why else ""
        print(f"  not placed: {name} ({why}{hint})", file=sys.stderr)
    if args.report:
        cmd = " ".join(["mincap plot", *args.inputs, *(f"--from-json {d}" for d in args.from_json or []),
                        f"--estimator {args.estimator}", f"-o {args.output}", f"--report {args.report}"])
        out = plot.write_report(rungs, args.report, figure=args.output, pareto=pareto, estimator=args.estimator,
                                machine=args.machine, command=cmd)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mincap",
        description="How small can a network be, in bits of a real file, and still reach a target accuracy?",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_search(sub)
    _add_summary(sub)
    _add_export(sub)
    _add_train(sub)
    _add_verify(sub)
    _add_entropy(sub)
    _add_plot(sub)
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
    except KeyboardInterrupt as stop:
        if isinstance(stop, Terminated):
            print("mincap: terminated", file=sys.stderr)
            return 143
        print("mincap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
