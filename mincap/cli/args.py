"""Options shared by several `mincap` commands."""

from __future__ import annotations

import argparse
from dataclasses import fields

__all__ = ["add_data_args", "add_data_dir", "defaults"]


def defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls)}


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder(s) holding e.g. MNIST/raw/*.gz, joined by ':' (default: $MINCAP_DATA, else "
                        "~/.cache/mincap then shared/datasets beside the source checkout)")


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist", help="dataset name (default: mnist)")
    add_data_dir(p)
