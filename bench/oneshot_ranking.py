"""The ranking check (issue 29, item 5): does the supernet rank networks as training from scratch does?

`studies/history/mnist-99-v2.db` and `studies/mnist-99-v3.db` hold networks trained FROM SCRATCH
(their COMPLETE trials: `final_spec` (else `spec`), `bits_per_layer`, `artifact_bits`, `val_acc`).
Each one whose network lies inside the supernet's space is mapped to a `SubnetConfig` (same
family, kernels, pools, padding and block kinds, widths on the grid, bits per layer in range) and
scored twice, as a one-shot trial is:

* one-shot: its weights inherited from the supernet, batch norm re-estimated on train images,
  written, decoded, the decoded file scored on validation (`mincap.oneshot.score.score_subnet`) at
  its own bits per layer (sparsity `--sparsity`, default 0: the from-scratch files were pruned
  WITH fine-tuning, the one-shot extraction prunes without);
* fine-tuned: that network fine-tuned `--finetune-epochs` epochs from the inherited weights,
  distilled from the supernet's largest (`OneshotObjective.finetune`), scored again.

Networks whose widths are off the grid by at most `--snap` channels (default: one width step) are
snapped to the nearest grid width (ties to the wider) and reported apart ("snapped"); the
rest are out, each with its reasons (kernel 5, a plain block after the first, padding, widths).
Identical configurations (the seed presets recur with different recipes) are scored once.

Reported: Kendall's tau (scipy's tau-b) of one-shot vs from-scratch validation accuracy and of
fine-tuned vs from-scratch, over the exactly-in rows, over exact + snapped, and over distinct
configurations (from-scratch accuracy averaged); the gap (from-scratch minus one-shot) mean,
standard deviation and range; per-network rows; the supernet's key and recipe; the machine and
its load average. Nothing reads the test set.

The supernet is loaded through `train_supernet` (space and recipe: the `[oneshot]` section of
`--study`, else `SupernetSpace()` / `SupernetRecipe()`, `--epochs`/`--space`/`--recipe`
overriding), which returns the cached file when it is there. A cache file written before the
recipe gained a field (so under an older key) is found by its stored space and recipe and the
hash of its own key ("legacy"). When none is cached the script stops, unless `--allow-train`.
The cache lives beside the data: `--data` (or `$MINCAP_DATA`), e.g.
`MINCAP_DATA=/tmp/os/data:/work/shared/datasets` (the first folder holds mincap-cache/).

    taskset -c 1 env OMP_NUM_THREADS=1 MINCAP_THREADS=1 python bench/oneshot_ranking.py \\
        --data /tmp/os/data:/work/shared/datasets --epochs 20 --finetune-epochs 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import torch

from mincap import data
from mincap.errors import MincapError
from mincap.nets.models import Spec
from mincap.oneshot.score import score_subnet
from mincap.oneshot.settings import OneshotSettings
from mincap.oneshot.space import SubnetConfig, SupernetSpace
from mincap.oneshot.supernet import Supernet
from mincap.oneshot.trainer import (
    SupernetRecipe,
    SupernetRun,
    _train_fingerprint,
    supernet_dirs,
    supernet_key,
    train_supernet,
)
from mincap.oneshot.trial import OneshotObjective
from mincap.training.engine import setup_threads

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DBS = (f"{ROOT}/studies/history/mnist-99-v2.db:mnist-99-v2",
               f"{ROOT}/studies/mnist-99-v3.db:mnist-99-v3")
LOAD_NOTE = ("ran under load: other workers shared this 2-core machine (see load_avg); timings "
             "are indicative, accuracies and ranks are not affected")


# -- the machine --------------------------------------------------------------------------------
def machine(load_start: tuple[float, ...]) -> dict:
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = None
    return {"cores": os.cpu_count(), "affinity": affinity, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "optuna": optuna.__version__,
            "platform": platform.platform(), "python": platform.python_version(),
            "load_avg_start": [round(v, 2) for v in load_start],
            "load_avg_end": [round(v, 2) for v in os.getloadavg()], "under_load": True,
            "note": LOAD_NOTE}


# -- the supernet -------------------------------------------------------------------------------
def add_supernet_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the supernet")
    g.add_argument("--study", help="a study file with an [oneshot] section: its space, recipe, "
                   "settings and split (default: SupernetSpace(), SupernetRecipe(), the defaults)")
    g.add_argument("--epochs", type=int, help="override the recipe's epochs (e.g. 20)")
    g.add_argument("--space", default="{}", help="JSON: SupernetSpace fields to override")
    g.add_argument("--recipe", default="{}", help="JSON: SupernetRecipe fields to override")
    g.add_argument("--settings", default="{}", help="JSON: OneshotSettings fields to override (e.g. "
                   "'{\"finetune_lr\": 0.01, \"finetune_distill_weight\": 0}')")
    g.add_argument("--data", help="data root(s), os.pathsep-joined; the first holds mincap-cache/ "
                   "(default: $MINCAP_DATA)")
    g.add_argument("--n-val", type=int, help="validation images (default: the study's, 5000)")
    g.add_argument("--split-seed", type=int, help="split seed (default: the study's, 0)")
    g.add_argument("--limit", type=int, help="first N train images (quick checks)")
    g.add_argument("--allow-train", action="store_true",
                   help="train the supernet when it is not cached (long: 40-55 s an epoch)")


def study_parts(args) -> tuple[SupernetSpace, SupernetRecipe, OneshotSettings, dict]:
    """(space, recipe, settings, split) from `--study` or the defaults, with the overrides."""
    split = {"n_val": 5000, "split_seed": 0, "limit": None}
    if args.study:
        from mincap.config.study import load_study_file  # the [oneshot] parser

        cfg = load_study_file(args.study)
        space, recipe = cfg.oneshot.space(), cfg.oneshot.recipe()
        settings = cfg.oneshot.settings(cfg.study.target)
        split = {"n_val": cfg.data.n_val, "split_seed": cfg.data.split_seed,
                 "limit": cfg.data.limit or None}
    else:
        space, recipe, settings = SupernetSpace(), SupernetRecipe(), OneshotSettings()
    settings = replace(settings, **json.loads(args.settings))
    space = SupernetSpace(**{**space.to_dict(), **json.loads(args.space)})
    rec = {**recipe.to_dict(), **json.loads(args.recipe)}
    if args.epochs:
        rec["epochs"] = args.epochs
    recipe = SupernetRecipe(**rec)
    for k in ("n_val", "split_seed", "limit"):
        if getattr(args, k) is not None:
            split[k] = getattr(args, k)
    return space, recipe, settings, split


def _key_of_blob(splits, space: SupernetSpace, blob: dict, split: dict) -> str:
    """The name `supernet_key` gave this file when it was written (its own format and recipe)."""
    doc = json.dumps({"format": blob["format"], "dataset": splits.name, "n_val": split["n_val"],
                      "split_seed": split["split_seed"], "limit": split["limit"],
                      "split": _train_fingerprint(splits), "space": space.to_dict(),
                      "recipe": blob["recipe"]}, sort_keys=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in splits.name)
    return f"{safe}-supernet-{hashlib.sha256(doc.encode()).hexdigest()[:16]}.pt"


def _legacy(dirs, splits, space: SupernetSpace, recipe: SupernetRecipe, split: dict):
    """A finished cache file of this space and recipe written under an older key, or None."""
    for d in dirs:
        for path in sorted(d.glob(f"{splits.name}-supernet-*.pt")):
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                same = (SupernetSpace(**blob["space"]) == space
                        and SupernetRecipe(**blob["recipe"]) == recipe)
            except (OSError, RuntimeError, EOFError, KeyError, TypeError, MincapError):
                continue
            if (same and int(blob["epoch"]) >= recipe.epochs
                    and _key_of_blob(splits, space, blob, split) == path.name):
                return path, blob
    return None, None


def load_supernet(args, splits, space: SupernetSpace, recipe: SupernetRecipe,
                  split: dict) -> tuple[SupernetRun, dict]:
    """The cached supernet (or trained with `--allow-train`) and how it was found."""
    space = space.with_data(splits.in_shape, splits.n_classes)
    key = supernet_key(splits.name, space, recipe, split_fp=_train_fingerprint(splits), **split)
    dirs = supernet_dirs(args.data)
    cached = None
    for d in dirs:
        if (d / key).is_file():
            blob = torch.load(d / key, map_location="cpu", weights_only=True)
            if int(blob["epoch"]) >= recipe.epochs:
                cached = d / key
                break
    how = "cached"
    if cached is None:
        path, blob = _legacy(dirs, splits, space, recipe, split)
        if path is not None:
            net = Supernet(space)
            net.load_state_dict(blob["net"])
            net.eval()
            run = SupernetRun(net, recipe, path.name, path, list(blob["history"]),
                              int(blob["epoch"]), float(blob["train_time_s"]))
            return run, {"how": "legacy", "key": path.name, "current_key": key, "path": str(path),
                         "note": "written before the recipe's current fields (its stored recipe "
                                 "equals this one with their defaults); its own key verified"}
        if not args.allow_train:
            raise SystemExit(
                f"oneshot bench: the supernet {key} ({recipe.epochs} epochs) is not cached in "
                f"{', '.join(map(str, dirs))}; pass --data/--study/--epochs for the cached one, "
                "or --allow-train to train it (long)")
        how = "trained"
    run = train_supernet(space, splits, recipe, root=args.data, progress=False, **split)
    return run, {"how": how, "key": run.key, "path": str(run.cache_path)}


def supernet_record(run: SupernetRun, found: dict, space: SupernetSpace) -> dict:
    return {**found, "space": space.to_dict(), "recipe": run.recipe.to_dict(),
            "epochs_done": len(run.history) or run.resumed_epoch,
            "train_time_s": round(run.train_time_s, 1)}


def load_splits(args, split: dict):
    return data.load("mnist", root=args.data, **split)


# -- from-scratch networks into the space -------------------------------------------------------
def snap_width(w: int, choices: tuple[int, ...], snap: int) -> int | None:
    """The nearest grid width (ties: the wider) when at most `snap` channels away, else None."""
    best = min(choices, key=lambda c: (abs(c - w), -c))
    return best if abs(best - w) <= snap else None


def map_spec(spec: Spec, bits, space: SupernetSpace, snap: int, sparsity: float = 0.0):
    """(config or None, "exact" | "snapped" | "out", reasons, snapped widths {block: (from, to)})."""
    reasons = []
    if spec.family != "cnn" or spec.head != "gap" or spec.hidden:
        reasons.append(f"family {spec.family}/{spec.head}" + (" + hidden" if spec.hidden else ""))
    if spec.activation != "relu":
        reasons.append(f"activation {spec.activation}")
    if tuple(spec.in_shape) != tuple(space.in_shape) or spec.n_classes != space.n_classes:
        reasons.append("data shape")
    d = len(spec.convs)
    if not space.depth[0] <= d <= space.depth[1]:
        reasons.append(f"depth {d}")
    kinds = set()
    for i, c in enumerate(spec.convs):
        k = space.kernel0 if i == 0 else space.kernel
        if c.kernel != k:
            kinds.add(f"kernel {c.kernel}")
        if c.stride != 1:
            kinds.add(f"stride {c.stride}")
        if c.pool != (2 if i < space.pools else 1):
            kinds.add("pool pattern")
        if c.pad != (c.kernel // 2 if space.padding == "same" else 0):
            kinds.add(f"padding (pad {c.pad})")
        sep = space.separable and i > 0
        if bool(c.separable) != sep:
            kinds.add("plain block after the first" if sep else "separable block")
    reasons += sorted(kinds)
    if bits is None or not len(bits):
        reasons.append("float (no bits per layer)")
    else:
        if len(bits) != space.n_layers(d) and not kinds:  # else the block kinds say why
            reasons.append(f"{len(bits)} bit widths for {space.n_layers(d)} layers")
        if any(not space.bits[0] <= b <= space.bits[1] for b in bits):
            reasons.append(f"bits outside {space.bits[0]}..{space.bits[1]}")
    widths, moved, far = [], {}, []
    for i, c in enumerate(spec.convs[: space.depth[1]]):
        ch = space.width_choices(i)
        if c.channels in ch:
            widths.append(c.channels)
            continue
        to = snap_width(c.channels, ch, snap)
        if to is None:
            far.append(f"block {i} width {c.channels} not within {snap} of {ch[0]}..{ch[-1]}")
        else:
            moved[i] = (c.channels, to)
            widths.append(to)
    if reasons or far:
        return None, "out", reasons + far, moved
    cfg = SubnetConfig(tuple(widths), tuple(bits), sparsity)
    space.check(cfg)
    return cfg, "snapped" if moved else "exact", [], moved


def _widths(spec_json: str) -> list[int]:
    return [c.channels for c in Spec.from_json(spec_json).convs]


def scratch_trials(dbs) -> list[dict]:
    """Every COMPLETE trial of the from-scratch studies ("path:study_name" each)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for item in dbs:
        path, _, name = item.rpartition(":")
        if not Path(path).is_file():
            raise SystemExit(f"oneshot bench: no such study database {path}")
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{path}")
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            u = t.user_attrs
            js = u.get("final_spec") or u.get("spec")
            if js is None or "val_acc" not in u:
                continue
            n_params = u.get("n_params") or 0
            out.append({"db": str(path), "study": name, "trial": t.number,
                        "seed_preset": u.get("seed_preset"), "spec_json": js,
                        "channel_pruned": _widths(u.get("spec") or js) != _widths(js),
                        "bits_per_layer": u.get("bits_per_layer"),
                        "scratch_bits": u.get("artifact_bits"), "scratch_val": float(u["val_acc"]),
                        "scratch_sparsity": round(1 - u.get("n_nonzero", n_params) / n_params, 3)
                        if n_params else None})
    return out


# -- statistics ---------------------------------------------------------------------------------
def kendall_tau(a, b) -> float | None:
    """Kendall's tau-b (scipy); None when undefined (fewer than 2 points, or one list constant)."""
    from scipy.stats import kendalltau

    if len(a) < 2:
        return None
    tau = kendalltau(a, b).statistic
    return None if tau is None or math.isnan(tau) else round(float(tau), 4)


def gap_stats(scratch, other) -> dict | None:
    if not scratch:
        return None
    g = np.asarray(scratch, float) - np.asarray(other, float)
    sd = float(g.std(ddof=1)) if len(g) > 1 else 0.0
    return {"n": len(g), "mean": round(float(g.mean()), 5), "sd": round(sd, 5),
            "se": round(sd / math.sqrt(len(g)), 5), "min": round(float(g.min()), 5),
            "max": round(float(g.max()), 5)}


def summarize(rows: list[dict], fidelity: str) -> dict:
    """Tau and gap of one fidelity ("oneshot" or "finetune") over exact / all / distinct configs."""
    out = {}
    for name, keep in (("exact", ("exact",)), ("exact_and_snapped", ("exact", "snapped"))):
        sel = [r for r in rows if r["in_space"] in keep and r.get(fidelity)]
        sc = [r["scratch_val"] for r in sel]
        os_ = [r[fidelity]["val_acc"] for r in sel]
        by_cfg: dict[str, list] = {}
        for r in sel:
            by_cfg.setdefault(r["config_key"], []).append(r)
        dsc = [float(np.mean([r["scratch_val"] for r in v])) for v in by_cfg.values()]
        dos = [v[0][fidelity]["val_acc"] for v in by_cfg.values()]
        out[name] = {"n": len(sel), "tau": kendall_tau(os_, sc), "n_configs": len(by_cfg),
                     "tau_configs": kendall_tau(dos, dsc), "gap": gap_stats(sc, os_)}
    return out


# -- main ---------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_supernet_args(p)
    p.add_argument("--db", action="append",
                   help="from-scratch study 'path.db:study_name' (repeatable; default: v2 and v3)")
    p.add_argument("--finetune-epochs", type=int,
                   help="fine-tuning epochs (default: the settings' finetune_epochs; 0: none)")
    p.add_argument("--snap", type=int, help="snap widths at most this far off the grid "
                   "(default: the width step; 0: no snapping)")
    p.add_argument("--sparsity", type=float, default=0.0, help="magnitude sparsity at extraction")
    p.add_argument("--out", default=str(ROOT / "bench/results/oneshot_ranking.json"))
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    setup_threads()
    t_start = time.perf_counter()
    space, recipe, settings, split = study_parts(args)
    ft_epochs = settings.finetune_epochs if args.finetune_epochs is None else args.finetune_epochs
    settings = replace(settings, finetune_epochs=ft_epochs, promote=False)
    splits = load_splits(args, split)
    run, found = load_supernet(args, splits, space, recipe, split)
    net = run.net.eval()
    space = net.space
    snap = space.width_step if args.snap is None else args.snap
    print(f"supernet {found['key']} ({found['how']}, {run.recipe.epochs} epochs)", flush=True)
    objective = OneshotObjective(run, splits, None, settings)

    rows, reasons, scored = [], {}, {}
    for r in scratch_trials(args.db or DEFAULT_DBS):
        spec = Spec.from_json(r.pop("spec_json"))
        cfg, where, why, moved = map_spec(spec, r["bits_per_layer"], space, snap, args.sparsity)
        r["convs"] = [[c.channels, c.kernel, c.pool, c.pad, int(c.separable)] for c in spec.convs]
        r["in_space"], r["reasons"] = where, why
        r["snapped"] = {str(i): list(v) for i, v in moved.items()}
        for k in sorted({"off-grid width" if w.startswith("block") else w for w in why}):
            reasons[k] = reasons.get(k, 0) + 1  # networks out for this reason (among others)
        if why and all(w.startswith("block") for w in why):
            reasons["only off-grid widths"] = reasons.get("only off-grid widths", 0) + 1
        if cfg is not None:
            key = json.dumps(cfg.to_dict(), sort_keys=True)
            r["config"], r["config_key"] = cfg.to_dict(), key
            if key not in scored:
                t0 = time.perf_counter()
                s, model = score_subnet(net, cfg, splits, side_bits=settings.side_bits,
                                        calib_images=settings.calib_images,
                                        seed=settings.calib_seed)
                entry = {"oneshot": {"artifact_bits": s.artifact_bits, "val_acc": s.val_acc,
                                     "time_s": round(time.perf_counter() - t0, 2)}}
                if ft_epochs > 0:
                    ft, _ = objective.finetune(model, cfg)
                    entry["finetune"] = {"artifact_bits": ft.artifact_bits, "val_acc": ft.val_acc,
                                         "time_s": round(ft.time_s, 2), "epochs": ft_epochs}
                scored[key] = entry
                fts = entry.get("finetune", {}).get("val_acc", float("nan"))
                print(f"  {r['study']} #{r['trial']:<3} {where:7} widths {cfg.widths} bits "
                      f"{cfg.bits}: scratch {r['scratch_val']:.4f}, one-shot "
                      f"{s.val_acc:.4f}, fine-tuned {fts:.4f}", flush=True)
            r.update(scored[key])
        rows.append(r)

    counts = {"total": len(rows), "exact": sum(r["in_space"] == "exact" for r in rows),
              "snapped": sum(r["in_space"] == "snapped" for r in rows),
              "out": sum(r["in_space"] == "out" for r in rows), "distinct_configs": len(scored),
              "out_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
              "snap_channels": snap}
    result = {
        "bench": "oneshot_ranking", "issue": 29,
        "what": "from-scratch networks of mnist-99-v2/v3 scored with the supernet's inherited "
                "weights (one-shot) and after fine-tuning, against their from-scratch val_acc",
        "supernet": supernet_record(run, found, space),
        "settings": {**settings.to_dict(), "sparsity_at_extraction": args.sparsity},
        "split": split, "dbs": list(args.db or DEFAULT_DBS), "counts": counts,
        "oneshot_vs_scratch": summarize(rows, "oneshot"),
        "finetune_vs_scratch": summarize(rows, "finetune") if ft_epochs > 0 else None,
        "rows": rows, "wall_s": round(time.perf_counter() - t_start, 1),
        "machine": machine(load_start),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print_summary(result)
    print(f"wrote {out}")
    return result


def print_summary(res: dict) -> None:
    c = res["counts"]
    print(f"\nin the space: {c['exact']} exact + {c['snapped']} snapped (of {c['total']}; "
          f"{c['distinct_configs']} distinct configs); out: {c['out']} {c['out_reasons']}")
    for name in ("oneshot_vs_scratch", "finetune_vs_scratch"):
        if not res.get(name):
            continue
        for subset, s in res[name].items():
            g = s["gap"] or {}
            print(f"{name:20} {subset:18} n={s['n']:3} tau={s['tau']} "
                  f"(configs {s['n_configs']}: {s['tau_configs']}) gap mean "
                  f"{g.get('mean')} sd {g.get('sd')} range [{g.get('min')}, {g.get('max')}]")


if __name__ == "__main__":
    try:
        main()
    except MincapError as err:
        sys.exit(f"oneshot bench: {err}")
