"""What a study found: trials by state, the Pareto front, and the chosen network.

Stopped trials are listed with their reason: FAIL trials with `fail_reason` (an error,
"interrupted by the user (SIGINT)"), PRUNED ones with `stop_reason` (early stop, the
search's --timeout deadline).

The chosen network is the COMPLETE trial with the smallest `artifact_bits` whose
*validation* accuracy meets the target. Its test accuracy is then evaluated once, from
its stored artifact, saved in the study (`test_acc/<trial>` user attribute) and shown
— it never takes part in choosing. On request (`replicates=K`) the chosen configuration is
retrained with K more seeds on validation (`mincap.search.replicates`, stored in the study)
and the count reaching the target is shown. The chosen network's two-part code (its file plus
the training labels coded with it, `mincap.evaluation.twopart`) is computed once from its artifact and
stored like the test accuracy (`two_part/<trial>`). `summarize` returns the summary as plain data (the
dict `mincap summary --json` prints); `summary_tables` renders it for the terminal.

A one-shot study (`mincap.oneshot`) adds `oneshot` (its supernets, their training time, how many
trials were fine-tuned), and its chosen network says which fidelity its file is (`oneshot` /
`finetune`) and, with replicates, `oneshot_gap`: its validation accuracy minus the mean of the
same network trained from scratch (`mincap.search.replicates.oneshot_config`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from mincap.data import memorization_note
from mincap.entropy import cache as entropy_cache
from mincap.errors import MincapError
from mincap.evaluation.holdout import final_test_accuracy
from mincap.evaluation.selection import smallest_reaching
from mincap.evaluation.twopart import two_part_code
from mincap.format.container import decode
from mincap.report import fmt_acc, fmt_bits
from mincap.search.oneshot_run import SUPERNETS_ATTR
from mincap.search.replicates import replicate_trial, stored_replicates
from mincap.search.storage import last_heartbeats, search_wall_s, trial_spans

__all__ = ["chosen_trial", "pick_trial", "smallest_by_depth", "summarize", "summary_tables", "test_accuracy_once",
           "two_part_once"]


def chosen_trial(study, target: float):
    """The smallest COMPLETE trial whose validation accuracy reaches `target` (the one rule,
    `mincap.evaluation.selection`)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return smallest_reaching(done, target, bits=lambda t: t.user_attrs.get("artifact_bits"),
                             val_acc=lambda t: t.user_attrs.get("val_acc"), order=lambda t: t.number)


def pick_trial(study, target: float, number: int | None = None):
    """Trial `number`, or the chosen network when None; one clear line when there is none."""
    if number is None:
        trial = chosen_trial(study, target)
        if trial is None:
            raise MincapError(f"study {study.study_name!r} has no trial reaching the target on validation yet")
        return trial
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not trials:
        raise MincapError(f"study {study.study_name!r} has no trial {number}")
    return trials[0]


def _row(t) -> dict[str, Any]:
    a = t.user_attrs
    spec = a.get("final_spec") or a.get("spec")
    fam = json.loads(spec).get("family") if spec else None
    return {
        "trial": t.number, "artifact_bits": a.get("artifact_bits"), "val_acc": a.get("val_acc"),
        "n_params": a.get("n_params"), "n_nonzero": a.get("n_nonzero"), "nominal_bits": a.get("nominal_bits"),
        "bits_per_layer": a.get("bits_per_layer"), "family": fam, "spec": spec,
        "mackay_bits": 2 * a["n_params"] if a.get("n_params") is not None else None,
        "train_time_s": a.get("train_time_s"),
    }


def _depth(row: dict[str, Any]) -> int | None:
    """A network's depth: conv blocks of a CNN, hidden layers of an MLP."""
    if not row["spec"]:
        return None
    d = json.loads(row["spec"])
    return len(d.get("convs") or []) if d.get("family") == "cnn" else len(d.get("hidden") or [])


def smallest_by_depth(complete, target: float) -> list[dict[str, Any]]:
    """Per (family, depth) among the complete trials: how many, the best validation accuracy, and
    the smallest one reaching `target` (None if none did). From every trial, not only the Pareto
    front, so that a depth's smallest network is there even when another depth dominates it."""
    groups: dict[tuple[str, int], list] = {}
    for t in complete:
        row = _row(t)
        depth = _depth(row)
        if row["family"] and depth is not None and row["val_acc"] is not None:
            groups.setdefault((row["family"], depth), []).append(row)
    out = []
    for (family, depth), rows in sorted(groups.items()):
        best = smallest_reaching(rows, target, bits=lambda r: r["artifact_bits"], val_acc=lambda r: r["val_acc"],
                                 order=lambda r: r["trial"])
        out.append({"family": family, "depth": depth, "n_complete": len(rows),
                    "best_val_acc": max(r["val_acc"] for r in rows), "smallest": best})
    return out


def test_accuracy_once(study, trial, dataset: str, read_artifact: Callable[[Any], bytes], *,
                       data_dir=None) -> float:
    """Decode the chosen trial's stored artifact (`read_artifact(trial)`, e.g. a partial of
    `mincap.search.storage.artifact_bytes`) and evaluate it on the test set, once per study."""
    key = f"test_acc/{trial.number}"
    if key in study.user_attrs:
        return study.user_attrs[key]
    dec = decode(read_artifact(trial))
    acc, _ = final_test_accuracy(dec.model, dataset, root=data_dir)
    study.set_user_attr(key, acc)
    return acc


def two_part_once(study, trial, dataset: str, read_artifact: Callable[[Any], bytes], *, data_dir=None) -> dict:
    """The chosen trial's two-part code on the training labels (`mincap.evaluation.twopart`), once per study."""
    key = f"two_part/{trial.number}"
    if key not in study.user_attrs:
        study.set_user_attr(key, two_part_code(read_artifact(trial), dataset, data_dir=data_dir))
    return study.user_attrs[key]


def _pruned_reason(t) -> str:
    """Why a trial was pruned: its `stop_reason` (early stop, the --timeout deadline), else, for
    studies from before `stop_reason` was recorded, read from the early-stop attributes."""
    a = t.user_attrs
    if a.get("stop_reason"):
        return a["stop_reason"][:200]
    if "early_stop_val_acc" in a:
        return f"early stop at epoch {len(a.get('curve') or [])} (val {fmt_acc(a['early_stop_val_acc'])})"
    return ""


def summarize(study, *, target: float, dataset: str, read_artifact=None, data_dir=None,
              evaluate_test: bool = True, replicates: int = 0, study_cfg=None) -> dict[str, Any]:
    """The summary as plain data (the same dict `--json` prints). `read_artifact(trial)`: the
    trial's `.mincap` bytes, needed to evaluate the chosen network on test.

    `replicates=K` (needs `study_cfg`, the `StudyConfig`): retrain the chosen configuration with
    K more seeds; without it, replicates stored by an earlier request are shown."""
    trials = study.get_trials(deepcopy=False)
    heartbeats = last_heartbeats(study._storage)
    spans = trial_spans(trials, heartbeats)  # a trial failed as stale ends when it was last alive
    states: dict[str, dict[str, float]] = {}
    for t in trials:
        s = states.setdefault(t.state.name, {"trials": 0, "time_s": 0.0})
        s["trials"] += 1
        if t.number in spans:
            s["time_s"] += (spans[t.number][1] - spans[t.number][0]).total_seconds()
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.values]
    front = []
    for t in sorted(complete, key=lambda t: (t.values[0], -t.values[1])):
        if not front or t.values[1] > front[-1]["val_acc"]:
            front.append(_row(t))
    best = chosen_trial(study, target)
    chosen = None
    if best is not None:
        chosen = _row(best)
        if evaluate_test and read_artifact is not None:
            chosen["test_acc"] = test_accuracy_once(study, best, dataset, read_artifact, data_dir=data_dir)
        else:
            chosen["test_acc"] = study.user_attrs.get(f"test_acc/{best.number}")
        chosen["two_part"] = study.user_attrs.get(f"two_part/{best.number}")
        if read_artifact is not None and chosen["two_part"] is None:
            try:
                chosen["two_part"] = two_part_once(study, best, dataset, read_artifact, data_dir=data_dir)
            except MincapError:  # the training set is not on this machine: no figure, a stored one stands
                pass
        if replicates and study_cfg is not None:
            chosen["replicates"] = replicate_trial(study, best, study_cfg, k=replicates, data_dir=data_dir)
        else:
            chosen["replicates"] = stored_replicates(study, best.number, target)
    if chosen is not None and "oneshot" in best.user_attrs:
        chosen.update(_oneshot_chosen(best, chosen.get("replicates")))
    saved = sum(t.user_attrs.get("early_stop_saved_s", 0.0) for t in trials)
    # A trial failed by the heartbeat check has no reason of its own: its process died (kill -9,
    # a lost machine) and `mincap search` re-queued its parameters as a new trial.
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    fails = [{"trial": t.number, "reason": t.user_attrs.get("fail_reason", "")[:200]
              or ("its process stopped (stale heartbeat); parameters re-queued" if t.number in retried else "")}
             for t in trials if t.state.name == "FAIL"]
    pruned = [{"trial": t.number, "reason": _pruned_reason(t)} for t in trials if t.state.name == "PRUNED"]
    return {
        "study": study.study_name, "dataset": dataset, "target": target, "n_trials": len(trials),
        "states": states, "search_wall_s": round(search_wall_s(trials, heartbeats), 1),
        "early_stop_saved_s": round(saved, 1), "pareto_front": front, "chosen": chosen,
        "failures": fails, "pruned": pruned, "entropy": entropy_cache.newest(dataset, data_dir),
        # Validation = the training set itself (mnist-random-N); None for an ordinary dataset.
        "memorization": memorization_note(dataset),
        "smallest_by_depth": smallest_by_depth(complete, target),
        "oneshot": _oneshot_study(study, trials),
    }


def _oneshot_chosen(t, replicates: dict | None) -> dict[str, Any]:
    """The chosen one-shot trial's fidelities and, with replicates, its gap to from-scratch training."""
    a = t.user_attrs
    tuned = a.get("finetune")
    scratch = sum(replicates["val_acc"]) / replicates["k"] if replicates and replicates["k"] else None
    return {"fidelity": a.get("fidelity"), "inherited_val_acc": a["oneshot"]["val_acc"],
            "finetuned_val_acc": tuned["val_acc"] if tuned else None, "supernet": a.get("supernet"),
            "scratch_mean_val_acc": scratch,
            "oneshot_gap": None if scratch is None else a["val_acc"] - scratch}


def _oneshot_study(study, trials) -> dict[str, Any] | None:
    """A one-shot study's supernets (their training is search time no trial span holds) and trials."""
    supernets = study.user_attrs.get(SUPERNETS_ATTR) or {}
    shot = [t for t in trials if "oneshot" in t.user_attrs]
    if not supernets and not shot:
        return None
    return {"supernets": supernets, "n_trials": len(shot),
            "supernet_train_s": round(sum(v.get("train_time_s", 0.0) for v in supernets.values()), 1),
            "n_finetuned": sum("finetune" in t.user_attrs for t in shot)}


def summary_tables(s: dict[str, Any]) -> Group:
    """The summary for the terminal: trials by state, Pareto front, failures, chosen network, entropy."""
    t1 = Table(title=f"{s['study']}: trials by state", header_style="bold",
               caption=f"early stopping saved ~{s['early_stop_saved_s']:.0f} s")
    for col in ("state", "trials", "time (s)"):
        t1.add_column(col, justify="right" if col != "state" else "left")
    for name, v in sorted(s["states"].items()):
        t1.add_row(name.lower(), str(v["trials"]), f"{v['time_s']:.0f}")
    t2 = Table(title=f"Pareto front (artifact bits vs validation accuracy, target {fmt_acc(s['target'])})",
               header_style="bold", caption=s.get("memorization"))
    for col in ("trial", "artifact bits", "val acc", "params", "MacKay bits (2/param)", "bits/layer", "family"):
        t2.add_column(col, justify="right")
    for r in s["pareto_front"]:
        mark = "*" if r["val_acc"] >= s["target"] else ""
        t2.add_row(f"{r['trial']}{mark}", fmt_bits(r["artifact_bits"]), fmt_acc(r["val_acc"]),
                   f"{r['n_params']:,}", fmt_bits(r["mackay_bits"]),
                   ",".join(map(str, r["bits_per_layer"] or [])), r["family"] or "-")
    parts = [t1, t2]
    for title, key in (("failed trials", "failures"), ("pruned trials", "pruned")):
        if s.get(key):  # "pruned" is missing from summaries written before it was recorded
            tf = Table(title=title, header_style="bold")
            tf.add_column("trial", justify="right")
            tf.add_column("reason")
            for f in s[key]:
                tf.add_row(str(f["trial"]), f["reason"] or "-")
            parts.append(tf)
    c = s["chosen"]
    t3 = Table(title="chosen network (smallest artifact with validation accuracy >= target)", show_header=False)
    t3.add_column("k")
    t3.add_column("v")
    if c is None:
        t3.add_row("none yet", "no complete trial reached the target on validation")
    else:
        t3.add_row("trial", str(c["trial"]))
        t3.add_row("artifact bits", fmt_bits(c["artifact_bits"]))
        t3.add_row("nominal bits", fmt_bits(c["nominal_bits"]))
        t3.add_row("parameters (nonzero)", f"{c['n_params']:,} ({c['n_nonzero']:,})")
        t3.add_row("MacKay bits (2 per parameter)", fmt_bits(c["mackay_bits"]))
        t3.add_row("validation accuracy", fmt_acc(c["val_acc"]))
        t3.add_row("test accuracy (reported, not used to choose)", fmt_acc(c.get("test_acc")))
        if c.get("two_part"):
            tp = c["two_part"]
            t3.add_row("two-part code: file + training labels", f"{fmt_bits(tp['artifact_bits'])} + "
                       f"{fmt_bits(round(tp['label_bits']))} = {fmt_bits(round(tp['total_bits']))} "
                       f"({tp['n_labels']:,} labels)")
        if c.get("replicates"):
            r = c["replicates"]
            t3.add_row("other seeds reaching the target (validation)",
                       f"{r['n_reach']} of {r['k']} (val {', '.join(fmt_acc(a) for a in r['val_acc'])})")
        if c.get("fidelity"):
            tuned = c["finetuned_val_acc"]
            kept = "fine-tuned" if c["fidelity"] == "finetune" else "inherited weights"
            t3.add_row("one-shot file", f"{kept} (inherited {fmt_acc(c['inherited_val_acc'])}"
                       + (f", fine-tuned {fmt_acc(tuned)})" if tuned is not None else ")"))
        if c.get("oneshot_gap") is not None:
            t3.add_row("one-shot minus from scratch (validation)",
                       f"{100 * c['oneshot_gap']:+.2f} points (from-scratch mean {fmt_acc(c['scratch_mean_val_acc'])})")
        t3.add_row("spec", c["spec"] or "-")
    parts.append(t3)
    if s.get("oneshot"):
        o = s["oneshot"]
        parts.append(Text(f"one-shot: {o['n_trials']} trial(s), {o['n_finetuned']} fine-tuned; "
                          f"{len(o['supernets'])} supernet(s), {o['supernet_train_s'] / 60:.1f} min of training "
                          f"(not in the trials' time)"))
    if s.get("entropy"):
        te = Table(title=f"{s['dataset']}: cached entropy estimates (mincap entropy)", header_style="bold")
        for col in ("estimator", "bits / example", "bits, training set"):
            te.add_column(col, justify="right" if col != "estimator" else "left")
        for name, e in s["entropy"].items():
            te.add_row(name, f"{e['bits_per_example']:,.3f}" if e["bits_per_example"] is not None else "-",
                       fmt_bits(e["bits_total"]))
        parts.append(te)
    return Group(*parts)
