"""The `mincap` command line: parse, call the library, print. Heavy imports (torch, optuna,
matplotlib) happen inside the commands, so `mincap --help` answers instantly; each command's
defaults come from the library's dataclasses (`mincap.config`, `mincap.config.study`), the single
source of truth shared with the Python API.

- `args`: options shared by several commands;
- `train`: `mincap train`, `mincap verify`, `mincap entropy` (one network, one dataset);
- `study`: `mincap search`, `summary`, `export`, `plot` (studies and the ladder);
- `info`: `mincap info` (mutual information inside a network, issue 18).
"""

from __future__ import annotations

import argparse
import sys

from mincap.cli import info, study, train
from mincap.errors import MincapError, Terminated

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mincap",
        description="How small can a network be, in bits of a real file, and still reach a target accuracy?",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    study.add_search(sub)
    study.add_summary(sub)
    study.add_export(sub)
    train.add_train(sub)
    train.add_verify(sub)
    train.add_entropy(sub)
    study.add_plot(sub)
    info.add_info(sub)
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
