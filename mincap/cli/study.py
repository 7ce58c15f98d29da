"""`mincap search`, `summary`, `export`, `plot`: studies and the dataset ladder."""

from __future__ import annotations

import argparse
import json
import sys

from mincap.cli.args import add_data_dir
from mincap.errors import MincapError

__all__ = ["add_export", "add_plot", "add_search", "add_summary"]


def _duration(text: str) -> float:
    """Seconds from '90', '90s', '30m', '2h' or '1.5h'."""
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 30m or 2h, got {text!r}") from None


DEFAULT_STUDY_FILE = "studies/mnist-99.toml"


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_file", nargs="?", default=None, help=f"TOML study file (default: {DEFAULT_STUDY_FILE})")
    p.add_argument("--storage", default=None,
                   help="a SQLAlchemy URL (postgresql+psycopg://user@host/db, sqlite:///file.db) or a journal "
                        "file (.log/.journal) (default: from the study file)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="study name (default: from the study file); with --storage and no study file, the "
                        "study's settings are read from the storage (a machine without the study file)")
    add_data_dir(p)


def add_search(sub) -> None:
    p = sub.add_parser("search", help="run or resume an Optuna study for the smallest network reaching the target")
    _add_study_args(p)
    p.add_argument("--trials", type=int, default=None, help="trials to run now (default: the study's budget)")
    p.add_argument("--timeout", type=_duration, default=None,
                   help="wall-time budget, e.g. 30m or 2h (default: the study's); a trial still training at the "
                        "deadline stops at its next epoch and is recorded PRUNED with the reason")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the study")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--batch-trials", type=int, default=0, metavar="N",
                   help="train up to N like-shaped trials as one batched computation "
                        "(default 0 = automatic: 8 on CUDA, 1 on CPU where it measured slower); "
                        "trials the batched engine does not train run one at a time (one line)")
    p.add_argument("--no-progress", action="store_true", help="no live display")
    p.set_defaults(func=_cmd_search)


def _cmd_search(args) -> int:
    from mincap.search.run import SearchOptions, run_search

    cfg = _study_cfg(args)
    _memorization_line(cfg.study.dataset)
    opts = SearchOptions(trials=args.trials, timeout_s=args.timeout, storage_url=args.storage,
                         workers=args.workers, device=args.device, batch_trials=args.batch_trials,
                         data_dir=args.data_dir,
                         progress=not args.no_progress)
    res = run_search(cfg, opts)
    sn = res.get("supernet")
    if sn and sn["how"] == "stopped":
        print(f"mincap search: the --timeout deadline passed while the supernet trained: {sn['epochs_done']} of "
              f"{sn['epochs']} epochs saved ({sn['path'] or 'none yet'}); the next `mincap search` resumes there",
              file=sys.stderr)
    if res["stale_failed"]:
        print(f"mincap search: trial(s) {', '.join(map(str, res['stale_failed']))} had no heartbeat for longer "
              f"than the grace period (a dead worker): failed and re-queued", file=sys.stderr)
    if res["stopped_at_deadline"]:
        print(f"mincap search: trial(s) {', '.join(map(str, res['stopped_at_deadline']))} stopped at the "
              f"--timeout deadline (recorded PRUNED)", file=sys.stderr)
    if res["unbatched"]:
        counts = sorted(res["unbatched"].items(), key=lambda kv: -kv[1])
        why = ", ".join(f"{reason} ({n})" for reason, n in counts)
        alone = sum(res["unbatched"].values())
        print(f"mincap search: {alone} of {res['trials_run']} trial(s) trained one at a time, not "
              f"in a batched group: the batched engine does not train {why}", file=sys.stderr)
    print(f"mincap search: {res['trials_total'] - res['trials_before']} trial(s) run in "
          f"{res['elapsed_s']:.0f} s; the study now has {res['trials_total']}. "
          f"See: mincap summary {_study_ref(args)}", file=sys.stderr)
    return 0


def add_summary(sub) -> None:
    p = sub.add_parser("summary", help="trials, Pareto front and the chosen network of a study")
    _add_study_args(p)
    p.add_argument("--no-test", action="store_true", help="do not evaluate the chosen network on the test set")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.add_argument("--save", action="store_true",
                   help="also write <study>.summary.json beside the study file (merged into the stored one: a "
                        "stored value is never replaced by nothing), what `mincap plot` and the report read")
    p.add_argument("--replicates", type=int, default=0, metavar="K",
                   help="retrain the chosen configuration with K more seeds (validation only; stored in the "
                        "study, not recomputed) and report how many reach the target")
    p.set_defaults(func=_cmd_summary)


def _study_cfg(args):
    """The study's settings: from the study file, or, given only `--storage` and `--study`,
    from the study itself (it keeps them: `mincap.search.storage.stored_config`)."""
    from dataclasses import replace

    from mincap.config.study import load_study_file
    from mincap.search.storage import stored_config

    if args.study_file is None and args.storage and args.study:
        return stored_config(args.storage, args.study)
    cfg = load_study_file(args.study_file or DEFAULT_STUDY_FILE)
    if args.study:
        cfg = replace(cfg, study=replace(cfg.study, name=args.study))
    return cfg


def _memorization_line(dataset: str) -> None:
    """On a memorization set (validation = training set), say so before anything else."""
    from mincap.data import memorization_note

    note = memorization_note(dataset)
    if note:
        print(f"mincap: {note}", file=sys.stderr)


def _study_ref(args) -> str:
    """How the user named the study, to repeat in a hint."""
    if args.study_file is None and args.storage and args.study:
        return f"--storage {args.storage} --study {args.study}"
    return args.study_file or DEFAULT_STUDY_FILE


def _cmd_summary(args) -> int:
    from functools import partial

    from mincap.report import console
    from mincap.results.summary import summarize, summary_tables
    from mincap.search.storage import artifact_bytes, open_study

    if args.replicates < 0:
        raise MincapError("--replicates must be >= 0")
    if args.save and _save_target(args) is None:  # before any work: the summary would have nowhere to go
        raise MincapError("--save needs the study file: the summary is written beside it")
    cfg = _study_cfg(args)
    study = open_study(cfg, url=args.storage, create=False)
    s = summarize(study, target=cfg.study.target, dataset=cfg.study.dataset,
                  read_artifact=partial(artifact_bytes, cfg, url=args.storage), data_dir=args.data_dir,
                  evaluate_test=not args.no_test, replicates=args.replicates, study_cfg=cfg)
    if args.json:
        print(json.dumps(s))
    else:
        _memorization_line(cfg.study.dataset)
        console().print(summary_tables(s))
    if args.save:
        _save_summary(args)
    return 0


def _save_target(args) -> str | None:
    """The study file `--save` writes beside: the one named, else the default one unless the study
    is named by --storage/--study alone (a machine without the study file)."""
    if args.study_file is not None:
        return args.study_file
    return None if (args.storage and args.study) else DEFAULT_STUDY_FILE


def _save_summary(args) -> None:
    """`--save`: the study's summary file, as `mincap plot --save-json` writes it (config and machine
    added, merged into the stored one); the test accuracy just measured is reused, not measured again."""
    from mincap.results import ladder

    rungs = ladder.load_rungs([_save_target(args)], data_dir=args.data_dir, evaluate_test=not args.no_test)
    for p in ladder.save_summaries(rungs):
        print(f"wrote {p}", file=sys.stderr)


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a study trial's artifact (default: the chosen network) to a file")
    _add_study_args(p)
    p.add_argument("--trial", type=int, default=None, help="trial number (default: the chosen network)")
    p.add_argument("-o", "--output", required=True, help="FILE.mincap to write")
    p.add_argument("--side", type=int, default=None, metavar="B",
                   help="re-encode the symmetric layers' biases and scale exponents at B bits (2..8, format "
                        "version 5) and evaluate the decoded network on the study's validation split")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from mincap.format.container import write
    from mincap.results.summary import pick_trial
    from mincap.search.storage import artifact_bytes, open_study

    cfg = _study_cfg(args)
    trial = pick_trial(open_study(cfg, url=args.storage, create=False), cfg.study.target, args.trial)
    data = artifact_bytes(cfg, trial, url=args.storage)
    if args.side is None:
        write(args.output, data)
        print(f"wrote {args.output}: trial {trial.number}, {trial.user_attrs['artifact_bits']:,} bits", file=sys.stderr)
        return 0
    from mincap import data as datasets
    from mincap.errors import MincapError
    from mincap.format.container import decode
    from mincap.format.writer import reexport
    from mincap.training.engine import evaluate

    if not 2 <= args.side <= 8:
        raise MincapError(f"--side must be in 2..8, got {args.side}")
    new = reexport(data, args.side)
    # The rounding changed the network: it is measured again, on validation only (it helps choose).
    splits = datasets.load(cfg.study.dataset, root=args.data_dir, n_val=cfg.data.n_val,
                           split_seed=cfg.data.split_seed, limit=cfg.data.limit or None)
    acc, _ = evaluate(decode(new).model, splits.val)
    write(args.output, new)
    verdict = "reaches" if acc >= cfg.study.target else "is below"
    print(f"wrote {args.output}: trial {trial.number}, {8 * len(data):,} bits as stored -> {8 * len(new):,} bits "
          f"(side info at {args.side} bits); validation {100 * acc:.2f}% {verdict} the target "
          f"{100 * cfg.study.target:g}%", file=sys.stderr)
    return 0


def add_plot(sub) -> None:
    from mincap.entropy.base import ESTIMATORS

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
    p.add_argument("--artifacts", action="append", default=None, metavar="PATH",
                   help="verify records (mincap verify --json) of files made outside a study, or a folder of "
                        "*.verify.json: placed beside the rungs where they reach a rung's target on its "
                        "validation split, marked as files (repeatable)")
    p.add_argument("--report", default=None, metavar="FILE.md", help="also write the markdown report here")
    p.add_argument("--save-json", action="store_true",
                   help="write <study>.summary.json beside each study file read live, merged into the "
                   "stored one: a stored value is never replaced by nothing")
    p.add_argument("--no-test", action="store_true", help="do not evaluate chosen networks on the test set")
    p.add_argument("--no-compute", action="store_true",
                   help="never compute a missing entropy estimate (default: compute asker/pixels/labels)")
    p.add_argument("--machine", default=None, help="the machine that ran the searches, for the report")
    add_data_dir(p)
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args) -> int:
    import glob

    from mincap.results import artifacts, figures, ladder, markdown, theory

    if not args.output.endswith((".png", ".svg")):
        raise MincapError(f"-o: the figure must end in .png or .svg, got {args.output}")
    inputs = args.inputs or ([] if args.from_json else ["studies/mnist-99.toml", *sorted(glob.glob("studies/ladder/*.toml"))])
    rungs = ladder.load_rungs(inputs, args.from_json, data_dir=args.data_dir, evaluate_test=not args.no_test)
    files = artifacts.load_artifacts(args.artifacts) if args.artifacts else []
    drawn = figures.plot_ladder(rungs, args.output, estimator=args.estimator, data_dir=args.data_dir,
                                compute=not args.no_compute, artifacts=files)  # placing none: raises, writes nothing
    pareto = figures.pareto_path(args.output)
    figures.plot_pareto(rungs, pareto)
    print(f"wrote {args.output} ({len(drawn['points'])} of {len(rungs)} studies placed"
          + (f", {len(drawn['files'])} of {len(files)} files" if files else "") + f") and {pareto}", file=sys.stderr)
    for name, why in drawn["skipped"].items():
        hint = f"; run: mincap entropy {name} --estimator {args.estimator}" if "estimate" in why else ""
        print(f"  not placed: {name} ({why}{hint})", file=sys.stderr)
    if args.save_json:  # after the plot, so that estimates it found or computed are saved too
        for p in ladder.save_summaries(rungs):
            print(f"wrote {p}", file=sys.stderr)
    if args.report:
        cmd = " ".join(["mincap plot", *args.inputs, *(f"--from-json {d}" for d in args.from_json or []),
                        *(f"--artifacts {a}" for a in args.artifacts or []),
                        f"--estimator {args.estimator}", f"-o {args.output}", f"--report {args.report}"])
        # Issue 17's section: from the summaries in capacity/ and locality/ beside the report, if any.
        extra = theory.theory_section(args.report, rungs, estimator=args.estimator)
        out = markdown.write_report(rungs, args.report, figure=args.output, pareto=pareto, files=drawn["files"],
                                    estimator=args.estimator, machine=args.machine, command=cmd, extra=extra)
        print(f"wrote {out}", file=sys.stderr)
    return 0
