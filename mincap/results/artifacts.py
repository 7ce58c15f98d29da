"""Networks made outside a study, placed on the ladder figure beside the studies' choices.

A smaller network may come from a documented `mincap train` command rather than a search, or
from `mincap export --side` of a study's trial (`studies/artifacts/*.mincap`, each with the
`mincap verify --json` output beside it as `*.verify.json`, whose optional `made_by` names the
command; `mincap train` where it is absent). By the project's rule such a file counts for a rung when its decoded network
reaches the rung's target on the same validation split (`n_val`, `split_seed`) the rung's study
used; it is then a point of its own, marked as a file, not folded into the study's answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mincap.errors import MincapError
from mincap.report import fmt_acc, fmt_target

__all__ = ["load_artifacts", "place_artifacts"]


def load_artifacts(inputs: list[str]) -> list[dict[str, Any]]:
    """`mincap verify --json` outputs: files, or every `*.verify.json` of a folder."""
    paths: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = sorted(p.glob("*.verify.json"))
            if not found:
                raise MincapError(f"--artifacts {p}: no *.verify.json files there")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise MincapError(f"--artifacts {p}: no such file or folder")
    out = []
    for p in paths:
        try:
            v = json.loads(p.read_text())
        except ValueError as err:
            raise MincapError(f"{p}: not valid JSON ({err})") from None
        if not isinstance(v, dict) or not {"dataset", "val_acc", "artifact_bits", "n_val", "split_seed"} <= set(v):
            raise MincapError(f"{p}: not a verify record (expected the output of `mincap verify --json`)")
        out.append({**v, "source": str(p)})
    return out


def _split_of(rung: dict[str, Any]) -> tuple[int | None, int]:
    cfg = rung.get("config") or {}
    return cfg.get("n_val"), int(cfg.get("split_seed", 0) or 0)


def place_artifacts(files: list[dict[str, Any]], rungs: list[dict[str, Any]]) -> tuple[list[dict], dict[str, str]]:
    """(files placed, {file: why not}) for each verify record against the rung of its dataset.

    A placed file is {"file", "dataset", "y" (artifact bits), "val_acc", "test_acc", "target",
    "n_params", "two_part", "source"}; X is the rung's, filled in by the caller.
    """
    by_dataset = {r.get("dataset"): r for r in rungs}
    placed, skipped = [], {}
    for f in files:
        name = Path(f.get("file") or f["source"]).name
        rung = by_dataset.get(f["dataset"])
        if rung is None:
            skipped[name] = f"no study of {f['dataset']} gives it a target"
            continue
        n_val, seed = _split_of(rung)
        if n_val is not None and (f["n_val"], f["split_seed"]) != (n_val, seed):
            skipped[name] = (f"verified on {f['n_val']} validation images (split seed {f['split_seed']}), "
                             f"the study used {n_val} (seed {seed})")
            continue
        if f["val_acc"] < rung["target"]:
            skipped[name] = f"validation {fmt_acc(f['val_acc'])} < target {fmt_target(rung['target'])}"
            continue
        placed.append({"file": name, "path": f.get("file"), "dataset": f["dataset"], "y": float(f["artifact_bits"]),
                       "val_acc": f["val_acc"], "test_acc": f.get("test_acc"), "target": rung["target"],
                       "n_params": f.get("n_params"),
                       "bits_per_layer": [la["bits"] for la in f.get("layers") or []],
                       "two_part": (f.get("two_part") or {}).get("total_bits"), "source": f["source"],
                       # how the file was made, where its record says (`mincap export --side`); else train
                       "made_by": f.get("made_by") or "mincap train"})
    return placed, skipped
