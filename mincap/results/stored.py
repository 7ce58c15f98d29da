"""Summary JSON files on disk (`<study>.summary.json`): read them, and rewrite them with nothing lost.

A committed summary is data: the entropy estimates in it may have taken minutes to compute
and live in no cache of a fresh clone, and its test accuracy was measured once. So the live
path (`mincap plot STUDY.toml`) starts from the stored summary and `--save-json` rewrites it
only through `merge`, which never replaces a stored value with nothing. Per field:

- `study`, `dataset`, `target`: must agree, else *refuse* (one line, nothing written): the
  file describes another study, or the study file's target changed, and the stored network
  was chosen for the old one. Remove the summary file to write it anew.
- `n_trials`: a database holding fewer trials than the summary counted is another or an
  older database: *refuse*.
- `states`, `search_wall_s`, `early_stop_saved_s`, `pareto_front`, `failures`, `pruned`:
  recomputed from the database, which holds every stored trial (checked above): *fresh*.
- `chosen`: fresh, except that a field the fresh one lacks (`test_acc` under `--no-test`)
  is *kept* when it is the same network (same trial, same bits); a different network does
  not inherit the old one's test accuracy. No chosen network where one was stored: *refuse*.
- `entropy`: *merged* per estimator; a stored estimate is kept, the cache (and, in
  `mincap plot`, a computed cheap estimator) fills only the estimators the file lacks. The
  cache holds whatever was last run, with any settings; the file holds what the report was
  built on. To renew an estimate, delete it from the file.
- `machine` (where the searches ran): the stored one is *kept*; the current machine is
  added only when the study has gained trials since, since only then may it have run some.
- `config`: from the study file, always present: fresh.
- Any other key: fresh wins unless it is missing or empty (None, {}, [], "") while the
  stored one is not: then the stored one is *kept*.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mincap.config.study import load_study_file
from mincap.errors import MincapError

__all__ = ["config_of", "load_summary", "merge", "read_summary", "search_time_s", "summary_path", "supernet_time_s",
           "write_summary"]

_IDENTITY = ("study", "dataset", "target")
# Keys the plot adds to a rung in memory; not part of a summary file.
_TRANSIENT = ("source",)


def supernet_time_s(s: dict[str, Any]) -> float:
    """Seconds a one-shot study spent training its supernet(s): search time that no trial's span
    holds (0 for a per-trial study)."""
    return float((s.get("oneshot") or {}).get("supernet_train_s") or 0.0)


def search_time_s(s: dict[str, Any]) -> float | None:
    """A summary's search wall time with a one-shot study's supernet training counted in, as its
    budget counts it; None where the summary does not say."""
    wall = s.get("search_wall_s")
    return None if wall is None else wall + supernet_time_s(s)


def summary_path(study_file: str | Path) -> Path:
    """Where a study file's summary goes: `X.toml` -> `X.summary.json`."""
    p = Path(study_file)
    return p.with_name(p.stem + ".summary.json")


def config_of(cfg, source: str) -> dict[str, Any]:
    """What a summary records of its study file: target, validation size, budget."""
    return {
        "file": source, "target": cfg.study.target, "n_val": cfg.data.n_val, "split_seed": cfg.data.split_seed,
        "budget_trials": cfg.budget.trials, "budget_timeout_s": cfg.budget.timeout_s,
    }


def _sibling_config(json_path: Path) -> dict[str, Any] | None:
    """The study file beside a summary JSON (`X.summary.json` -> `X.toml`), if any."""
    stem = json_path.name.removesuffix(".json").removesuffix(".summary")
    toml = json_path.with_name(stem + ".toml")
    if not toml.is_file():
        return None
    try:
        return config_of(load_study_file(toml), str(toml))
    except MincapError:
        return None


def load_summary(p: Path) -> dict[str, Any]:
    """A summary file as stored; one-line MincapError if it is not one."""
    try:
        s = json.loads(Path(p).read_text())
    except ValueError as err:
        raise MincapError(f"{p}: not valid JSON ({err})") from None
    if not isinstance(s, dict) or not {"dataset", "target", "chosen"} <= set(s):
        raise MincapError(f"{p}: not a summary (expected the output of `mincap summary --json`)")
    return s


def read_summary(p: Path) -> dict[str, Any]:
    """A summary file as a rung: stored, plus `config` from the study file beside it if it lacks one."""
    s = load_summary(p)
    s.setdefault("config", _sibling_config(Path(p)))
    return s


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, (dict, list, str)) and not v)


def _keep_stored(stored: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """Fresh values, except where fresh is missing or empty and stored is not."""
    out = dict(stored)
    for k, v in fresh.items():
        if not (_empty(v) and not _empty(stored.get(k))):
            out[k] = v
    return out


def _same_network(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("trial") == b.get("trial") and a.get("artifact_bits") == b.get("artifact_bits")


def merge(stored: dict[str, Any], fresh: dict[str, Any], *, path: str | Path) -> dict[str, Any]:
    """The summary to write over `path` (holding `stored`): `fresh` with nothing stored lost (see above)."""
    redo = f"not overwriting {path} (remove it to write it anew)"
    for k in _IDENTITY:
        if k in stored and stored[k] != fresh.get(k):
            raise MincapError(f"{path} has {k} {stored[k]!r}, the study {fresh.get(k)!r}: {redo}")
    n_old, n_new = stored.get("n_trials") or 0, fresh.get("n_trials") or 0
    if n_new < n_old:
        raise MincapError(f"the study has {n_new} trials, {path} counted {n_old}: another database? {redo}")
    old_c, new_c = stored.get("chosen"), fresh.get("chosen")
    if old_c and not new_c:
        raise MincapError(f"the study has no chosen network, {path} has trial {old_c.get('trial')}: {redo}")
    out = _keep_stored(stored, fresh)
    if old_c and new_c and _same_network(old_c, new_c):
        out["chosen"] = _keep_stored(old_c, new_c)
    out["entropy"] = {**(fresh.get("entropy") or {}), **(stored.get("entropy") or {})}
    machines = [m for m in (stored.get("machine") or "").split("; ") if m]
    if fresh.get("machine") and (not machines or n_new > n_old) and fresh["machine"] not in machines:
        machines.append(fresh["machine"])
    out["machine"] = "; ".join(machines) or None
    return out


def write_summary(p: str | Path, s: dict[str, Any]) -> Path:
    """Write a summary atomically (a crash leaves the old file, never half a new one)."""
    p = Path(p)
    text = json.dumps({k: v for k, v in s.items() if k not in _TRANSIENT}, indent=1, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, p.stat().st_mode & 0o777 if p.exists() else 0o644)  # mkstemp makes it 0600
    os.replace(tmp, p)
    return p
