"""bench/levers.py: one lever changes one setting, a tiny run writes decoded files and resumes,
and files of different setups are not merged into one table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import levers  # noqa: E402

from mincap.format.container import decode  # noqa: E402


def _changed(lever: str) -> dict:
    base, other = levers.lever_train("base", 80, 1).to_dict(), levers.lever_train(lever, 80, 1).to_dict()
    return {k: other.get(k) for k in set(base) | set(other) if base.get(k) != other.get(k)}


def test_each_lever_changes_only_its_own_settings():
    assert _changed("base") == {}
    assert _changed("affine") == levers.AFFINE
    assert _changed("elastic") == {"elastic_alpha": 34.0}  # sigma 4 px is the default
    assert _changed("elastic-mild") == {"elastic_alpha": 16.0}
    assert _changed("epochs200") == {"epochs": 200}
    assert _changed("distill") == {"distill_weight": 0.5}
    assert _changed("elastic-mild-200") == {"elastic_alpha": 16.0, "epochs": 200}  # exactly the two, together
    exp = levers.lever_experiment("epochs200", 80, 0, teacher="small", teacher_epochs=1, limit=None, data_dir=None,
                                  output="x.mincap")
    assert exp.compress.qat_epochs == 40 and exp.teacher is None  # the last 20% quantized, at any length
    assert levers.lever_experiment("distill", 80, 0, teacher="small", teacher_epochs=1, limit=None, data_dir=None,
                                   output="x.mincap").teacher == "small"


def test_a_tiny_bench_writes_decoded_files_resumes_and_merges(tmp_path, mnist_root, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    common = ["--epochs", "1", "--limit", "300", "--data-dir", str(mnist_root), "--keep", str(tmp_path / "files")]
    assert levers.main([*common, "--levers", "base", "--seeds", "0", "--out", str(a)]) == 0
    run = json.loads(a.read_text())["runs"][0]
    file = tmp_path / "files" / "base-s0.mincap"
    assert run["artifact_bits"] == 8 * file.stat().st_size == 8 * run["file_bytes"]
    assert decode(file.read_bytes()).size["artifact_bits"] == run["artifact_bits"]
    assert run["artifact_bits"] < run["bits_default_side"]  # side numbers at 6 bits, not 8
    capsys.readouterr()
    assert levers.main([*common, "--levers", "base", "--seeds", "0,1", "--out", str(a)]) == 0  # seed 0 is done
    trained = [line for line in capsys.readouterr().out.splitlines() if " seed " in line]
    assert trained and all("seed 1" in line for line in trained)
    assert levers.main([*common, "--levers", "affine", "--seeds", "0", "--out", str(b)]) == 0
    merged = tmp_path / "m.json"
    assert levers.main(["--merge", str(a), str(b), "--out", str(merged)]) == 0
    table = json.loads(merged.read_text())["levers"]
    assert table["base"]["val_acc"]["n"] == 2 and table["affine"]["seeds"] == [0]
    capsys.readouterr()
    assert levers.main(["--markdown", "--out", str(merged)]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split(" | ")[:2] for r in rows] == [["| base", "2"], ["| affine", "1"]]
    assert f"{table['base']['artifact_bits']['mean']:,.0f}" in rows[0]
    other = tmp_path / "c.json"
    assert levers.main([common[0], "2", *common[2:], "--levers", "base", "--seeds", "0", "--out", str(other)]) == 0
    assert levers.main(["--merge", str(a), str(other), "--out", str(tmp_path / "n.json")]) == 2
    assert not (tmp_path / "n.json").exists()


def test_another_teacher_redoes_only_the_distill_runs(tmp_path, mnist_root, capsys):
    out = tmp_path / "a.json"
    common = ["--epochs", "1", "--limit", "300", "--data-dir", str(mnist_root), "--seeds", "0", "--out", str(out)]
    mlp8, mlp9 = '{"family":"mlp","hidden":[8]}', '{"family":"mlp","hidden":[9]}'
    assert levers.main([*common, "--levers", "base,distill", "--teacher", mlp8, "--teacher-epochs", "1"]) == 0
    first = {r["lever"]: r for r in json.loads(out.read_text())["runs"]}
    assert first["distill"]["teacher"] == {"arch": mlp8, "epochs": 1} and "teacher" not in first["base"]
    assert 0 <= first["distill"]["teacher_val_acc"] <= 1
    capsys.readouterr()
    assert levers.main([*common, "--levers", "base,distill", "--teacher", mlp9, "--teacher-epochs", "1"]) == 0
    trained = [line for line in capsys.readouterr().out.splitlines() if " seed " in line]
    assert len(trained) == 1 and trained[0].startswith("levers: distill")  # base was kept, not retrained
    again = {r["lever"]: r for r in json.loads(out.read_text())["runs"]}
    assert again["base"] == first["base"] and again["distill"]["teacher"]["arch"] == mlp9
    other = tmp_path / "b.json"
    assert levers.main([*common[:-1], str(other), "--levers", "distill", "--teacher", mlp8,
                        "--teacher-epochs", "1"]) == 0
    assert levers.main(["--merge", str(out), str(other), "--out", str(tmp_path / "m.json")]) == 2  # two teachers
