"""A cluster with a shared filesystem and no database server: Optuna's JournalFileBackend.

Two `mincap search` processes from two folders share only a folder holding the journal file;
the networks go beside it, so a third folder exports them from the journal path alone."""

import json
import subprocess
from collections import Counter

import optuna
from machines import mincap_cmd, run_env, write_study
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend


def test_two_processes_on_one_journal_file(tmp_path, mnist_root):
    shared = tmp_path / "shared"
    shared.mkdir()
    journal = str(shared / "many.journal")
    env = run_env(mnist_root)
    procs = []
    for machine in ("a", "b"):
        f = write_study(tmp_path / machine)
        procs.append(subprocess.Popen(mincap_cmd("search", str(f), "--storage", journal, "--trials", "3",
                                                 "--no-progress"), cwd=f.parent, env=env,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    storage = JournalStorage(JournalFileBackend(journal))
    trials = optuna.load_study(study_name="many", storage=storage).get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert sorted(Counter(t.user_attrs["worker"] for t in trials).values()) == [3, 3]
    # The networks sit beside the journal, on the shared filesystem, not in the machines' folders.
    assert len(list((shared / "many.artifacts").iterdir())) == 6
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["many.toml"]
    third = tmp_path / "c"
    third.mkdir()
    where = ["--storage", journal, "--study", "many"]
    out = subprocess.run(mincap_cmd("export", *where, "--trial", "4", "-o", "t4.mincap"), cwd=third, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(mincap_cmd("verify", "t4.mincap", "--n-val", "1000", "--json"), cwd=third, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["artifact_bits"] == trials[4].user_attrs["artifact_bits"]
