"""`mincap info`: mutual information inside a network (issue 18), per layer or over training."""

from __future__ import annotations

import argparse
import json
import sys

from mincap.cli.args import add_data_dir
from mincap.errors import MincapError

__all__ = ["add_info"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers joined by ',', got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers joined by ',', got {text!r}") from None


def add_info(sub) -> None:
    p = sub.add_parser("info", help="mutual information per layer (information plane, successive layers)",
                       description="I(X;T), I(T;Y) and I(T_l;T_l+1) per layer on a seeded sample of the train "
                                   "split; --trajectory trains an MLP and draws the information plane.")
    p.add_argument("target", nargs="?", help="a .mincap artifact or a study .toml (with --trial; default: its "
                                             "chosen network)")
    p.add_argument("--trial", type=int, default=None, help="trial number of the study")
    p.add_argument("--dataset", default=None, help="dataset of a .mincap file (default: mnist)")
    p.add_argument("--samples", type=int, default=None,
                   help="train inputs the MI is computed on (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (and of --trajectory's training)")
    p.add_argument("--bins", type=int, default=30, help="bins per unit for the binning estimator (default 30)")
    p.add_argument("--noise-var", type=float, default=0.1, help="KDE noise variance (default 0.1)")
    p.add_argument("--estimators", default="bin,kde,kde-rel,exact", help="comma list of bin, kde, kde-rel, exact")
    p.add_argument("--json", action="store_true", help="print the rows as JSON on stdout and nothing else")
    p.add_argument("-o", "--output", default=None, metavar="FILE.png", help="draw the information plane here")
    add_data_dir(p)
    g = p.add_argument_group("--trajectory: train an MLP and follow its layers over training")
    g.add_argument("--trajectory", action="store_true")
    g.add_argument("--task", default="toy12", help="toy12 (12-bit task) or mnist")
    g.add_argument("--activation", default="tanh", help="tanh or relu")
    g.add_argument("--widths", type=_ints, default=None, help="hidden widths (default 10,7,5,4,3)")
    g.add_argument("--epochs", type=int, default=None, help="default 2000 (toy12), 30 (mnist)")
    g.add_argument("--points", type=int, default=40, help="log-spaced epochs kept (plus epoch 0)")
    g.add_argument("--n-train", type=int, default=5000, help="mnist: train images used")
    g.add_argument("--lr", type=float, default=0.003)
    g.add_argument("--bins-list", type=_ints, default=None, help="extra binning panels, e.g. 8,100")
    g.add_argument("--noise-vars", type=_floats, default=None, help="extra KDE panels, e.g. 0.01,1")
    g.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("--ladder: the chosen network of every committed summary")
    g.add_argument("--ladder", nargs="*", default=None, metavar="SUMMARY.json",
                   help="summaries (default: studies/, studies/ladder/ *.summary.json)")
    g.add_argument("--section", default="studies/info/README.md", help="markdown file the table goes into")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    if args.trajectory:
        return _trajectory(args)
    if args.ladder is not None:
        return _ladder(args)
    if not args.target:
        raise MincapError("info: give a TARGET (.mincap or study .toml), --trajectory or --ladder")
    from mincap.info.analyze import analyze, info_table, load_target
    from mincap.info.figures import plane_figure, result_plane
    from mincap.report import console

    tgt = load_target(args.target, trial=args.trial, dataset=args.dataset)
    res = analyze(tgt, estimators=tuple(e for e in args.estimators.split(",") if e), n_samples=args.samples or 1000,
                  bins=args.bins, noise_var=args.noise_var, seed=args.seed, data_dir=args.data_dir)
    if args.output:
        plane_figure(result_plane(res), args.output, title=f"{tgt.label} ({tgt.artifact_bits:,} bits)")
    if args.json:
        print(json.dumps(res.rows))
        return 0
    console().print(info_table(res, title=f"{tgt.label}: {tgt.artifact_bits:,} bits, {tgt.dataset}"))
    return 0


def _trajectory(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mincap.info.figures import plane_figure
    from mincap.info.trajectory import TrajectoryConfig, record_epochs, run_trajectory
    from mincap.report import epoch_progress

    hidden = args.widths or (10, 7, 5, 4, 3)
    epochs = args.epochs or (2000 if args.task == "toy12" else 30)
    cfg = TrajectoryConfig(task=args.task, activation=args.activation, hidden=hidden, epochs=epochs,
                           n_train=args.n_train, n_info=args.samples or 1000, n_points=args.points,
                           lr=args.lr, seed=args.seed)
    settings = [{"estimator": "bin", "bins": args.bins}, {"estimator": "kde", "noise_var": args.noise_var}]
    settings += [{"estimator": "bin", "bins": b} for b in args.bins_list or () if b != args.bins]
    settings += [{"estimator": "kde", "noise_var": v} for v in args.noise_vars or () if v != args.noise_var]
    show = not (args.no_progress or args.json)
    n_mi = len(settings) * len(record_epochs(epochs, args.points))
    with epoch_progress(epochs, enabled=show, label=f"{args.task} {args.activation}") as bar, \
            Progress(TextColumn("[bold]mutual information"), BarColumn(), MofNCompleteColumn(),
                     TimeElapsedColumn(), console=Console(stderr=True), disable=not show) as mi:
        task = mi.add_task("mi", total=n_mi)
        traj = run_trajectory(cfg, settings, on_epoch=bar, on_mi_step=lambda: mi.advance(task),
                              data_dir=args.data_dir)
    if args.output:
        out = plane_figure(traj, args.output, title=f"{args.task}, {args.activation} MLP {'-'.join(map(str, hidden))}")
        out.with_suffix(".json").write_text(json.dumps(traj))
    if args.json:
        print(json.dumps(traj))
    else:
        print(f"mincap info: trained {epochs} epochs in {traj['train_time_s']} s, MI at {len(traj['epochs'])} epochs "
              f"in {traj['mi_time_s']} s; final val acc {100 * traj['accuracy'][-1]['val_acc']:.2f}%"
              + (f"; figure {args.output}" if args.output else ""), file=sys.stderr)
    return 0


def _ladder(args) -> int:
    import glob
    from pathlib import Path

    from mincap.info.ladder import ladder_rows
    from mincap.info.ladder_table import section_markdown, write_section

    # The rungs of `mincap plot`'s ladder: the default study (studies/) and studies/ladder/.
    files = args.ladder or [f for d in ("studies", "studies/ladder")
                            for f in sorted(glob.glob(f"{d}/*.summary.json"))]
    if not files:
        raise MincapError("info --ladder: no summaries found")
    rows = ladder_rows(files, n_samples=args.samples or 1000, bins=args.bins, noise_var=args.noise_var,
                       data_dir=args.data_dir,
                       on_rung=lambda r: print(f"mincap info: {r['dataset']} trial {r['trial']} in {r['time_s']} s",
                                               file=sys.stderr))
    cmd = "mincap info --ladder" + (f" --samples {args.samples}" if args.samples else "")
    settings = {"bins": args.bins, "noise_var": args.noise_var, "command": cmd}
    section = section_markdown(rows, **settings)
    path = write_section(args.section, section)
    # The rows beside the section: `mincap plot --report` puts the same table into studies/RESULTS.md.
    Path(args.section).with_name("ladder.json").write_text(json.dumps({**settings, "rows": rows}, indent=1))
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"mincap info: {len(rows)} networks; table written to {path}", file=sys.stderr)
    return 0
