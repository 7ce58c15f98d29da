"""Many machines on one real PostgreSQL server: two `mincap search` processes started from two
folders that share nothing but the URL, a worker killed with SIGKILL, the server restarted
mid-study, and a third folder exporting and verifying the study's networks from the URL alone.

The figures these tests print (`-s`) are the ones quoted in docs/many-machines.md.
"""

import json
import os
import signal
import subprocess
import time
from collections import Counter

import optuna
import psycopg
import pytest
import sqlalchemy as sa
from machines import mincap_cmd, run_env, trials_of, wait_for, write_study

from mincap.config.study import StudyConfig
from mincap.search import server as server_mod
from mincap.search.storage import open_study


def _search(folder, url, trials, mnist_root, *extra, env=None, epochs=1):
    f = write_study(folder, epochs=epochs)  # each machine its own copy of the study file
    cmd = mincap_cmd("search", str(f), "--storage", url, "--trials", str(trials), "--no-progress", *extra)
    return subprocess.Popen(cmd, cwd=folder, env={**run_env(mnist_root), **(env or {})}, stderr=subprocess.PIPE,
                            text=True)


def _ok(p, timeout=300):
    _, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-2000:]
    return err


def test_two_machines_then_a_third_exports_and_verifies(tmp_path, pg_url, mnist_root):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    procs = [_search(d, pg_url, 3, mnist_root) for d in (a, b)]
    for p in procs:
        _ok(p)
    trials = trials_of(pg_url)
    assert sorted(t.number for t in trials) == list(range(6))  # none duplicated, none lost
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    per_worker = Counter(t.user_attrs["worker"] for t in trials)
    assert sorted(per_worker.values()) == [3, 3], per_worker
    print(f"\ntrials per worker: {dict(per_worker)}")
    # Self-contained: neither machine wrote a study database or an artifacts folder of its own.
    assert sorted(p.name for p in a.iterdir()) == ["many.toml"]
    assert sorted(p.name for p in b.iterdir()) == ["many.toml"]
    # A third machine: no study file, only the URL and the study's name.
    c.mkdir()
    env = run_env(mnist_root)
    where = ["--storage", pg_url, "--study", "many"]
    out = subprocess.run(mincap_cmd("summary", *where, "--json"), cwd=c, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["n_trials"] == 6 and s["chosen"] is not None
    best = next(t for t in trials if t.number == s["chosen"]["trial"])
    assert s["chosen"]["test_acc"] > 0.5  # decoded from the bytes in the database
    out = subprocess.run(mincap_cmd("export", *where, "-o", "net.mincap"), cwd=c, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(mincap_cmd("verify", "net.mincap", "--n-val", "1000", "--json"), cwd=c, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    v = json.loads(out.stdout)
    assert v["artifact_bits"] == best.user_attrs["artifact_bits"]
    assert v["test_acc"] == s["chosen"]["test_acc"]


def test_killed_worker_trial_fails_and_is_retried_with_its_parameters(tmp_path, pg_url, mnist_root):
    # Four epochs a trial: the victim is picked mid-training (epoch < epochs), so it cannot finish in the
    # moment between being picked and the kill (with one epoch it did, once, under load).
    a = _search(tmp_path / "a", pg_url, 20, mnist_root, epochs=4)
    try:
        def running_a():
            mine = [t for t in trials_of(pg_url) if t.user_attrs.get("worker", "").endswith(f":{a.pid}")]
            done = [t for t in mine if t.state.name == "COMPLETE"]
            live = [t for t in mine if t.state.name == "RUNNING" and (p := t.user_attrs.get("progress")) and p[0] < p[1]]
            return live[0] if done and live else None

        victim = wait_for(running_a, 240, step_s=0.1)
        assert victim is not None, "worker a never had a running trial after a finished one"
        os.kill(a.pid, signal.SIGKILL)
        t_kill = time.time()
    finally:
        a.kill()
        a.communicate()
    assert {t.number: t.state.name for t in trials_of(pg_url)}[victim.number] == "RUNNING"
    err = _ok(_search(tmp_path / "b", pg_url, 2, mnist_root))
    after = {t.number: t for t in trials_of(pg_url)}
    assert after[victim.number].state.name == "FAIL"
    failed_after_s = after[victim.number].datetime_complete.timestamp() - t_kill
    assert failed_after_s >= 2 - 1  # the grace period (2 s), less the heartbeat interval (1 s)
    retried = [t for t in after.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == victim.params
    assert not retried[0].user_attrs["worker"].endswith(f":{a.pid}")
    assert "no heartbeat" in err
    print(f"\nkilled trial {victim.number} failed {failed_after_s:.1f} s after the kill, retried as "
          f"trial {retried[0].number}")


def test_server_restart_mid_study_loses_no_complete_trial(tmp_path, pg_url, pg_server, mnist_root):
    procs = [_search(tmp_path / d, pg_url, 4, mnist_root) for d in ("a", "b")]
    try:
        def two_done():
            done = {t.number for t in trials_of(pg_url) if t.state.name == "COMPLETE"}
            return done if len(done) >= 2 else None

        before = wait_for(two_done, 240, step_s=0.2)
        assert before, "no two trials finished"
        t0 = time.time()
        pg_server.restart()
        restart_s = time.time() - t0
        errs = []
        for p in procs:
            _, err = p.communicate(timeout=300)
            errs.append(err)
    finally:
        for p in procs:
            p.kill()
    trials = trials_of(pg_url)
    complete = {t.number for t in trials if t.state.name == "COMPLETE"}
    assert before <= complete  # no COMPLETE trial lost
    for p, err in zip(procs, errs):
        # Either the worker went on, or it stopped with one clear line and no traceback.
        assert p.returncode == 0 or ("Traceback" not in err and err.strip().splitlines()[-1].startswith("mincap")), err
    after = [t for t in trials if t.datetime_start and t.datetime_start.timestamp() > t0 + restart_s]
    resumed_s = min(t.datetime_start.timestamp() for t in after) - (t0 + restart_s) if after else None
    if all(p.returncode == 0 for p in procs):
        assert len(trials) == 8 and not [t for t in trials if t.state.name == "RUNNING"]
        assert after, "no trial started after the restart"
    print(f"\nrestart took {restart_s:.1f} s; first trial after it began {resumed_s} s later; exit codes "
          f"{[p.returncode for p in procs]}; states {Counter(t.state.name for t in trials)}; failed: "
          f"{[t.user_attrs.get('fail_reason') for t in trials if t.state.name == 'FAIL']}")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_storage_call_cut_off_mid_query_is_run_again(pg_url, pg_server):
    """What a server restart does to a query in flight, made certain: the next query on the trials
    table has its connection terminated by the server. Optuna alone fails the call."""
    study = open_study(StudyConfig(), url=pg_url)
    trial = study.ask()
    trial.set_user_attr("before", 1)
    engine = study._storage._backend.engine  # the RDBStorage inside Optuna's cache
    armed = [True]

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _cut(conn, _cursor, statement, *_):
        if armed[0] and "FROM trials" in statement:
            armed[0] = False
            pid = conn.connection.dbapi_connection.info.backend_pid
            with psycopg.connect(f"host=127.0.0.1 port={pg_server.port} user={pg_server.db_user} "
                                 f"dbname=postgres", autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    trials = study.get_trials(deepcopy=False)
    assert not armed[0], "the cut never happened"
    assert [t.user_attrs for t in trials] == [{"before": 1}]
    trial.set_user_attr("after", 2)
    assert study.get_trials()[0].user_attrs == {"before": 1, "after": 2}


def test_server_gone_for_good_worker_stops_with_one_line(tmp_path, pg_url, pg_server, mnist_root):
    p = _search(tmp_path / "a", pg_url, 50, mnist_root, env={"MINCAP_RECONNECT_S": "1"})
    try:
        before = wait_for(lambda: {t.number for t in trials_of(pg_url) if t.state.name == "COMPLETE"}, 240)
        assert before, "no trial finished"
        pg_server.stop()
        try:
            t0 = time.time()
            _, err = p.communicate(timeout=120)
            stopped_s = time.time() - t0
        finally:
            pg_server.start()
    finally:
        p.kill()
    assert p.returncode == 1, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mincap: error: storage postgresql+psycopg://") and "did not come back" in last, err
    complete = {t.number for t in trials_of(pg_url) if t.state.name == "COMPLETE"}
    assert before <= complete
    print(f"\nthe worker stopped {stopped_s:.1f} s after the server (MINCAP_RECONNECT_S=1): {last[:90]}...")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_missed_heartbeat_does_not_end_the_heartbeat(pg_url, pg_server, monkeypatch):
    """Optuna's heartbeat thread stops at its first exception; with the server away, the beat is skipped."""
    monkeypatch.setattr(server_mod, "RECONNECT_S", 0.5)
    study = open_study(StudyConfig(), url=pg_url)
    trial = study.ask()
    pg_server.stop()
    try:
        study._storage.record_heartbeat(trial._trial_id)  # no exception: skipped
        with pytest.raises(optuna.exceptions.StorageInternalError):
            trial.set_user_attr("x", 1)  # other calls still fail, after the wait
    finally:
        pg_server.start()
    study._storage.record_heartbeat(trial._trial_id)
    trial.set_user_attr("x", 1)
    assert study.get_trials()[0].user_attrs == {"x": 1}
