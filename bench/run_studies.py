"""Run the committed study groups one study after another, each to its own wall-time budget, then
write their summaries and the report: resumable, for running in the background.

Groups, in this order unless `--group` names some:

- `capacity` (issue 17): `studies/capacity/mnist-random-{256,...,4096}.toml`, memorizing random
  labels, 30 minutes each;
- `locality` (issue 17): `studies/locality/{mlp,cnn}-{mnist,permuted}.toml`, 1 hour each;
- `ladder` (issue 16): `studies/ladder2/*.toml`, the dataset ladder searched alike, 1 hour each;
- `ladder3` (issue 31): `studies/ladder3/*.toml`, the same rungs with spaces that draw only networks
  for the input, 90 minutes of one core each (`--group ladder3`); the report draws ladder2 until
  every ladder3 rung has run;
- `locality3` (issue 31): `studies/locality3/*.toml`, the four locality cells again, one hour of one
  core a cell split over its studies (an MLP cell: one 20-minute study per depth 1, 2, 3; a CNN
  cell: one 30-minute one-shot study per head, gap and flatten), so that the depth table has
  trials at every depth; no replicates (the ladder's rungs have them). On two cores:
  `--group locality3 --only locality3/mlp` on one, `--only locality3/cnn` on the other.

For each study:

- a summary already there (`<stem>.summary.json`): done, skipped;
- else `mincap search` for what is left of its budget: `[budget] timeout_s` minus the search wall
  time its database already holds (`search_wall_s`: the union of its trials' intervals), so a run
  cut short (a reboot, Ctrl-C) resumes where it stopped instead of starting the budget again;
- then `mincap summary STUDY --save` writes the summary (the chosen network's test accuracy
  measured once; on a random-label set that is chance, by design); for a ladder rung with
  `--replicates 3`: its chosen configuration retrained with 3 more seeds, validation only, and
  before it the prequential-switch code of its training labels (`mincap entropy`, cached; kept in
  studies/info/entropy-<dataset>-prequential-switch.json), so the summary holds the same estimator
  for every rung.

Last, unless `--no-report`, `mincap plot` regenerates the ladder figure and studies/RESULTS.md
(whose issue-17 section, `mincap.results.theory`, draws studies/capacity.png and
studies/locality.png from the summaries). Then commit the summaries, databases, artifact folders
and figures. Budgets are wall time: on the 2-core machine run one group per core, pinned, so that
two searches do not share (and halve) a core:

    nohup taskset -c 1 python bench/run_studies.py --group capacity --no-report > runs.log 2>&1 &
    python bench/run_studies.py --dry-run                     # what would run, and for how long
    python bench/run_studies.py --only capacity/mnist-random-256   # one study
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's mincap, wherever the script is run from

from mincap.config.study import load_study_file  # noqa: E402
from mincap.entropy import cache as entropy_cache  # noqa: E402
from mincap.search.storage import last_heartbeats, open_study, search_wall_s  # noqa: E402

LADDER = ("mnist-binary", "mnist-k7", "mnist-k4", "mnist-k2", "mnist-14", "mnist-7", "digits")
GROUPS = {
    "capacity": [f"studies/capacity/mnist-random-{n}.toml" for n in (256, 512, 1024, 2048, 4096)],
    "locality": [f"studies/locality/{f}-{d}.toml" for f in ("mlp", "cnn") for d in ("mnist", "permuted")],
    "ladder": [f"studies/ladder2/{r}.toml" for r in LADDER],
    "ladder3": [f"studies/ladder3/{r}.toml" for r in LADDER],
    "locality3": [f"studies/locality3/mlp-{d}-d{k}.toml" for d in ("mnist", "permuted") for k in (1, 2, 3)]
    + [f"studies/locality3/cnn-{d}-{h}.toml" for d in ("mnist", "permuted") for h in ("gap", "flatten")],
}
STUDIES = [f for group in GROUPS.values() for f in group]
LADDER_GROUPS = ("ladder", "ladder3")  # the groups whose studies are rungs of the dataset ladder
# Issue 16: each placed ladder rung's chosen configuration is retrained with 3 more seeds
# (validation only) so the figure and table say how many reach the target; time outside the budget.
SUMMARY_ARGS = {g: ["--replicates", "3"] for g in LADDER_GROUPS}
# Issue 16: one information estimator for every rung, coded before the rung's summary so that the
# summary holds it (`mincap entropy` caches it); its JSON is kept in studies/info for the record.
ENTROPY = dict.fromkeys(LADDER_GROUPS, "prequential-switch")
MIN_LEFT_S = 60.0  # less than this left of a budget: the study counts as run


def report_args() -> list[str]:
    """`mincap plot` of the report: the ladder drawn from ladder3's summaries once every ladder3 rung
    has one, else from ladder2's (one budget per figure, never a mix of the two)."""
    done = all((REPO / f).with_name(Path(f).stem + ".summary.json").is_file() for f in GROUPS["ladder3"])
    ladder = "studies/ladder3" if done else "studies/ladder2"
    return ["plot", "--from-json", "studies", "--from-json", ladder, "--artifacts", "studies/artifacts",
            "--estimator", "prequential-switch", "-o", "studies/ladder.png", "--report", "studies/RESULTS.md"]


def mincap(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mincap.cli", *args]
    print("+ mincap " + " ".join(args), flush=True)
    return subprocess.run(cmd, cwd=REPO, check=True, text=True, capture_output=capture)


def used_s(study_file: str) -> float:
    """Search wall time the study's database already holds (0 when it has not run), read in this
    process: a `mincap summary` subprocess would load torch and the data for one number."""
    cfg = load_study_file(REPO / study_file)
    if cfg.storage.url or not (cfg.folder / f"{cfg.study.name}.db").is_file():
        return 0.0
    study = open_study(cfg, create=False)
    return search_wall_s(study.trials, last_heartbeats(study._storage))


def entropy_record(dataset: str, estimator: str) -> Path:
    """`studies/info/entropy-<dataset>-<estimator>.json`: the estimate, computed (or read from the
    cache) by `mincap entropy`; kept when already there."""
    out = REPO / "studies" / "info" / f"entropy-{dataset}-{estimator}.json"
    if not out.is_file():
        text = mincap("entropy", dataset, "--estimator", estimator, "--json", capture=True).stdout
        json.loads(text)  # a JSON list, or the run failed: never keep half a file
        out.write_text(text)
    else:  # kept from an earlier machine: the summary reads estimates from the cache, so put it there
        for e in json.loads(out.read_text()):
            if e.get("dataset") == dataset and e.get("estimator") == estimator:
                entropy_cache.write(None, f"{dataset}-{estimator}-record.json", e)
    return out


def plan(only: list[str] | None = None, groups: list[str] | None = None) -> list[dict]:
    """Per study: its file, budget, time used, time left, and whether its summary exists."""
    rows = []
    for group, f in ((g, f) for g in (groups or GROUPS) for f in GROUPS[g]):
        if only and not any(o in f for o in only):
            continue
        cfg = load_study_file(REPO / f)
        done = (REPO / f).with_name(Path(f).stem + ".summary.json").is_file()
        used = 0.0 if done else used_s(f)
        budget = cfg.budget.timeout_s
        rows.append({"file": f, "group": group, "dataset": cfg.study.dataset, "budget_s": budget, "used_s": used, "left_s": max(0.0, budget - used),
                     "summary": done})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", choices=list(GROUPS), help="only this group (repeatable)")
    ap.add_argument("--only", action="append", metavar="TEXT", help="only studies whose path contains TEXT")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate studies/RESULTS.md at the end")
    args = ap.parse_args(argv)
    rows = plan(args.only, args.group)
    for r in rows:
        state = "summary there: skipped" if r["summary"] else f"{r['left_s'] / 60:.1f} min left of {r['budget_s'] / 60:.0f}"
        print(f"{r['file']}: {state}", flush=True)
    if args.dry_run:
        return 0
    for r in rows:
        if r["summary"]:
            continue
        if r["left_s"] >= MIN_LEFT_S:
            mincap("search", r["file"], "--timeout", f"{r['left_s']:.0f}s", "--no-progress")
        if r["group"] in ENTROPY:
            entropy_record(r["dataset"], ENTROPY[r["group"]])
        mincap("summary", r["file"], "--save", *SUMMARY_ARGS.get(r["group"], []))
    if not args.no_report:
        mincap(*report_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
