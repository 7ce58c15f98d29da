"""No command overwrites committed results with less (issue 13): the README's plot commands on a
fresh clone's copy of studies/, `merge`'s rule per field, refusals, and a plot that places nothing."""

import copy
import glob
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from mincap.cli import main
from mincap.errors import MincapError
from mincap.results import ladder, summary
from mincap.results.artifacts import load_artifacts
from mincap.results.stored import merge

ROOT = Path(__file__).resolve().parents[2]


def _readme_plot_commands() -> list[list[str]]:
    """The `mincap plot` lines of the README's ladder section, as argv (globs expanded as a shell would)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The dataset ladder and `mincap plot`"):]
    section = section[:section.index("\n## ", 1)]
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith("mincap plot"):
                words = shlex.split(line, comments=True)[1:]
                cmds.append([w for word in words for w in (sorted(glob.glob(word)) if "*" in word else [word])])
    return cmds


def _rows(report: Path) -> list[str]:
    """The 'Every rung' table's data rows, sorted (a glob orders rungs by name, --from-json by the ladder)."""
    text = report.read_text()
    table = text[text.index("## Every rung"):text.index("## Comparison")]
    return sorted(line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| dataset"))


def _lost(old, new, where="") -> list[str]:
    """Paths where `old` held a value that `new` dropped or emptied (values may be added or updated)."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [where or "/"]
        return [p for k, v in old.items() for p in _lost(v, new.get(k), f"{where}/{k}")]
    empty = new is None or (isinstance(new, (dict, list, str)) and not new)
    return [where] if old not in (None, {}, [], "") and empty else []


def test_readme_plot_commands_on_a_fresh_clone_lose_nothing(tmp_path, monkeypatch, capsys):
    """Run as written on a copy of studies/, with an empty entropy cache and no data: every committed
    summary keeps every value, the figure places every rung the committed summaries place, and the
    report's table is the committed one. (Before: 0 of 8 placed and every stored estimate erased.)"""
    cmds = _readme_plot_commands()
    assert len(cmds) == 2 and "--save-json" in cmds[0] and "--from-json" in cmds[1]
    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MINCAP_DATA", str(tmp_path / "no-data"))

    def no_test_set(*_a, **_k):
        raise AssertionError("a test accuracy stored in the summary was measured again")

    monkeypatch.setattr(summary, "final_test_accuracy", no_test_set)
    committed = {p: json.loads(p.read_text()) for p in sorted(Path("studies").rglob("*.summary.json"))}
    # The eight rungs the README's commands read (the default study's studies/mnist-99.summary.json,
    # ladder3/); other summaries (history/, ladder/, capacity/, locality/) must come through untouched too.
    assert len([p for p in committed if p.parent.name in ("studies", "ladder3")]) == 8
    files = load_artifacts(["studies/artifacts"])
    expected = ladder.ladder_info(ladder.load_rungs([], ["studies", "studies/ladder3"]), "prequential-switch",
                                  compute=False, artifacts=files)
    # What the committed figure shows: the 99% files (sep16-99, sep20-99, mnist-99-side6), not the
    # 98.94% one.
    assert len(expected.points) == 5 and len(expected.files) == 3 and len(files) == 4  # mnist, k2, k4, k7, digits
    committed_rows = _rows(Path("studies/RESULTS.md"))
    for argv in [cmds[0], cmds[1]]:
        capsys.readouterr()
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 0, (argv, err)
        assert f"({len(expected.points)} of 8 studies placed, {len(expected.files)} of {len(files)} files)" in err, err
        assert sorted(re.findall(r"not placed: (\S+)", err)) == sorted(expected.skipped)
        for p, old in committed.items():
            new = json.loads(p.read_text())
            assert _lost(old, new) == [], p
            assert (new["entropy"], new["machine"]) == (old["entropy"], old["machine"]), p
            if old["chosen"]:  # test accuracy included; keys may be added
                assert {k: new["chosen"].get(k) for k in old["chosen"]} == old["chosen"], p
        assert _rows(Path("studies/RESULTS.md")) == committed_rows


def _fresh(stored, **changes):
    s = copy.deepcopy(stored)
    s.update(changes)
    return s


def test_merge_keeps_what_the_live_summary_lacks(summaries):
    stored = dict(summaries["mnist"], config={"file": "m.toml"}, failures=[{"trial": 4, "reason": "nan"}])
    fresh = _fresh(stored, entropy={"pixels": {"bits_per_example": 1.0, "bits_total": 6e4},
                                    "labels": {"bits_per_example": 9.0, "bits_total": 9.0}},
                   machine="another box", failures=None)
    fresh["chosen"]["test_acc"] = None  # --no-test
    del fresh["config"]
    out = merge(stored, fresh, path="m.summary.json")
    # stored estimates stand (labels not replaced by the cache's), the cache adds what is missing
    assert out["entropy"] == {**stored["entropy"], "pixels": {"bits_per_example": 1.0, "bits_total": 6e4}}
    assert out["chosen"]["test_acc"] == stored["chosen"]["test_acc"]
    assert out["machine"] == stored["machine"]  # same trials: the current machine ran none of them
    assert out["failures"] == stored["failures"] and out["config"] == stored["config"]  # never emptied

    grown = _fresh(fresh, n_trials=stored["n_trials"] + 5, machine="another box")
    grown["chosen"].update(trial=99, artifact_bits=9000, test_acc=None)  # a new, smaller network
    out = merge(stored, grown, path="m.summary.json")
    assert out["machine"] == "test box, 2 cores; another box"
    assert out["chosen"]["trial"] == 99 and out["chosen"]["test_acc"] is None  # not the old network's


@pytest.mark.parametrize("change, match", [
    ({"n_trials": 3}, "the study has 3 trials"),
    ({"target": 0.995}, "has target 0.99"),
    ({"dataset": "mnist-7"}, "has dataset 'mnist'"),
    ({"chosen": None}, "no chosen network"),
])
def test_merge_refuses_to_lose_results(summaries, change, match):
    with pytest.raises(MincapError, match=match):
        merge(summaries["mnist"], _fresh(summaries["mnist"], **change), path="m.summary.json")


@pytest.fixture
def live_k2(tmp_path, monkeypatch):
    """A copy of the committed mnist-k2 study (study file, database, artifacts, summary) in tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MINCAP_DATA", str(tmp_path / "no-data"))
    src = ROOT / "studies" / "ladder"
    for name in ("mnist-k2.toml", "mnist-k2.summary.json", "ladder-mnist-k2.db"):
        shutil.copy(src / name, tmp_path / name)
    shutil.copytree(src / "ladder-mnist-k2.artifacts", tmp_path / "ladder-mnist-k2.artifacts")
    return tmp_path


def _plot_k2(tmp, capsys):
    capsys.readouterr()
    rc = main(["plot", str(tmp / "mnist-k2.toml"), "--save-json", "--no-compute",
               "-o", str(tmp / "fig.png"), "--report", str(tmp / "R.md")])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_plot_placing_none_exits_2_and_writes_nothing(live_k2, capsys):
    js = live_k2 / "mnist-k2.summary.json"
    s = json.loads(js.read_text())
    del s["entropy"]["prequential"]
    js.write_text(json.dumps(s))
    before = js.read_bytes()
    rc, err = _plot_k2(live_k2, capsys)
    assert rc == 2 and len(err) == 1 and "would place 0 of 1 studies" in err[0], err
    assert "mnist-k2 (no prequential estimate)" in err[0]
    assert not (live_k2 / "fig.png").exists() and not (live_k2 / "R.md").exists()
    assert not (live_k2 / "fig-pareto.png").exists() and js.read_bytes() == before


def test_save_json_refuses_a_database_with_fewer_trials(live_k2, capsys):
    js = live_k2 / "mnist-k2.summary.json"
    s = json.loads(js.read_text())
    s["n_trials"] += 10  # the summary counted trials this database lacks
    js.write_text(json.dumps(s))
    before = js.read_bytes()
    rc, err = _plot_k2(live_k2, capsys)
    assert rc == 2 and len(err) == 1 and "not overwriting" in err[0] and str(js) in err[0], err
    assert js.read_bytes() == before and not (live_k2 / "fig.png").exists()
