"""`mincap info` end to end on the committed artifact, `--trajectory` on a short toy run, `--ladder`'s table."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mincap.cli import main
from mincap.info.ladder_table import BEGIN, END, section_markdown, spearman, write_section
from mincap.info.trajectory import record_epochs, toy12

ARTIFACT = Path(__file__).resolve().parents[2] / "studies" / "artifacts" / "mnist-15640.mincap"


def test_info_json_rows_on_the_committed_artifact(mnist_root, capsys, tmp_path):
    png = tmp_path / "plane.png"
    rc = main(["info", str(ARTIFACT), "--json", "--samples", "64", "--estimators", "bin,kde-rel",
               "--data-dir", str(mnist_root), "-o", str(png)])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and png.stat().st_size > 10_000
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "conv3", "conv4", "logits"] * 2
    assert {tuple(sorted(r)) for r in rows} == {("estimator", "i_next_bits", "i_ty_bits", "i_xt_bits", "layer",
                                                 "n_samples")}
    assert all(r["n_samples"] == 64 and 0 <= r["i_xt_bits"] <= math.log2(64) + 1e-9 for r in rows)
    assert [r["i_next_bits"] is None for r in rows] == [False] * 4 + [True] + [False] * 4 + [True]


def test_info_refuses_bad_input(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.mincap")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["info", str(ARTIFACT), "--estimators", "binz"]) == 2
    assert main(["info"]) == 2  # nothing to analyse


def test_info_refuses_a_dataset_the_network_does_not_take(mnist_root, capsys):
    assert main(["info", str(ARTIFACT), "--dataset", "mnist-7", "--data-dir", str(mnist_root)]) == 2
    assert "use --dataset" in capsys.readouterr().err


def test_toy12_is_balanced_and_deterministic():
    a, b = toy12(0), toy12(0)
    assert len(a.train) + len(a.val) == 4096 and a.n_classes == 2
    assert abs(float(a.train.y.float().mean()) - 0.5) < 0.05
    assert bool((a.train.x == b.train.x).all()) and set(a.train.x.unique().tolist()) == {0, 255}
    assert record_epochs(100, 5) == [0, 1, 3, 10, 32, 100]


def test_trajectory_runs_and_draws(tmp_path, capsys):
    png = tmp_path / "t.png"
    rc = main(["info", "--trajectory", "--epochs", "4", "--points", "3", "--samples", "200", "--widths", "6,4",
               "--noise-vars", "1", "--bins-list", "4", "--no-progress", "-o", str(png)])
    assert rc == 0 and png.stat().st_size > 10_000
    traj = json.loads(png.with_suffix(".json").read_text())
    assert traj["epochs"] == [0, 1, 2, 4] and traj["layers"] == ["fc1", "fc2", "logits"]
    assert [(s["estimator"], s.get("bins"), s.get("noise_var")) for s in traj["settings"]] == [
        ("bin", 30, None), ("kde", None, 0.1), ("bin", 4, None), ("kde", None, 1.0)]
    xt = np.array(traj["settings"][0]["i_xt_bits"])
    assert xt.shape == (4, 3) and (xt <= math.log2(200) + 1e-9).all()


def test_spearman_and_the_generated_section(tmp_path):
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    cols = {"i_xt_last_bits": 1.0, "i_ty_last_bits": 0.5, "last_layer": "conv2", "mean_next_bits": 2.0}
    rows = [{"dataset": f"d{i}", "trial": i, "artifact_bits": 1000 * (i + 1), "n_layers": 3, "n_samples": 10,
             "ceiling_xt_bits": 3.32, "h_y_bits": 1.0, "columns": {e: dict(cols) for e in ("bin", "kde", "kde-rel")}}
            for i in range(3)]
    md = tmp_path / "README.md"
    md.write_text("# kept\n\nhand text\n")
    write_section(md, section_markdown(rows, bins=30, noise_var=0.1, command="mincap info --ladder"))
    write_section(md, section_markdown(rows[:2], bins=30, noise_var=0.1, command="mincap info --ladder"))
    text = md.read_text()
    assert text.startswith("# kept\n\nhand text") and text.count(BEGIN) == 1 and text.count(END) == 1
    assert "| d1 (1) | 2,000 |" in text and "d2 (2)" not in text  # replaced, not appended


def test_the_report_carries_the_stored_info_section(tmp_path):
    from mincap.results.markdown import _info_section

    rungs = [{"source": str(tmp_path / "ladder" / "k2.summary.json")}]
    assert _info_section(rungs, tmp_path / "elsewhere") == []  # no `mincap info --ladder` run: no section
    cols = {"i_xt_last_bits": 4.5, "i_ty_last_bits": 2.25, "last_layer": "conv2", "mean_next_bits": 3.0}
    row = {"dataset": "mnist-k2", "trial": 14, "artifact_bits": 1072, "n_layers": 3, "n_samples": 1000,
           "ceiling_xt_bits": 9.97, "h_y_bits": 1.0, "columns": {e: dict(cols) for e in ("bin", "kde", "kde-rel")}}
    (tmp_path / "info").mkdir()
    (tmp_path / "info" / "ladder.json").write_text(json.dumps(
        {"bins": 30, "noise_var": 0.1, "command": "mincap info --ladder", "rows": [row]}))
    text = "\n".join(_info_section(rungs, tmp_path / "elsewhere"))  # found from the summary's folder
    assert "| mnist-k2 (14) | 1,072 | 3 | 1000 | 9.97 | 1.00 | 4.50 | 2.25 | 3.00 |" in text
    assert BEGIN in text and END in text


def test_a_moved_study_is_found_beside_its_summary(tmp_path):
    from mincap.info.ladder import study_file

    (tmp_path / "history").mkdir()
    summary = tmp_path / "history" / "s.summary.json"
    assert study_file(summary, "studies/s.toml") == Path("studies/s.toml")  # nothing beside it
    (tmp_path / "history" / "s.toml").write_text("")
    assert study_file(summary, "studies/s.toml") == tmp_path / "history" / "s.toml"


def test_info_on_a_study_trial(mnist_root, capsys):
    study = ARTIFACT.parents[1] / "ladder" / "mnist-k2.toml"
    rc = main(["info", str(study), "--trial", "14", "--json", "--samples", "64", "--estimators", "exact",
               "--data-dir", str(mnist_root)])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["layer"] for r in rows] == ["conv1", "conv2", "logits"]
    assert all(r["i_ty_bits"] <= 1.0 + 1e-9 for r in rows)  # two classes: H(Y) <= 1 bit
    assert main(["info", str(study), "--trial", "9999", "--data-dir", str(mnist_root)]) == 2
