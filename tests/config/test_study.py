import pytest

from mincap.cli import main
from mincap.config.study import DEFAULT_STUDY, StudyConfig, load_study_file, parse_study
from mincap.errors import MincapError


def test_default_study_file_parses():
    cfg = load_study_file(DEFAULT_STUDY)
    # a changed space means a new study name and database; earlier studies are kept in studies/history/
    assert cfg.study.name == "mnist-99-v3" and cfg.study.target == 0.99 and cfg.study.dataset == "mnist"
    assert cfg.storage_url.startswith("sqlite:///") and cfg.storage_url.endswith("studies/mnist-99-v3.db")
    assert all(p.split(";")[0] == "side=6" for p in cfg.space.paths)  # v3: every path starts at side=6
    assert cfg.space.bits == (2, 5) and cfg.space.quantizers == ("lsq",) and isinstance(cfg.space.families, tuple)


def test_history_study_files_still_open_their_databases():
    for name in ("mnist-99", "mnist-99-v2"):
        cfg = load_study_file(f"studies/history/{name}.toml")
        assert cfg.study.name == name and cfg.storage_url.endswith(f"studies/history/{name}.db")


def test_defaults_when_tables_missing():
    cfg = parse_study({"study": {"name": "x"}})
    assert cfg.space == StudyConfig().space and cfg.study.name == "x"


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"study": {"nmae": "x"}}, "nmae"),
        ({"study": {"target": "high"}}, "study.target"),
        ({"study": {"target": 1.5}}, "study.target"),
        ({"space": {"bits": [6, 2]}}, "space.bits"),
        ({"space": {"bits": [2, 4, 6]}}, "space.bits"),
        ({"space": {"epochs": 5}}, "space.epochs"),
        ({"budget": {"trials": True}}, "budget.trials"),
        ({"spaec": {}}, "spaec"),
        ({"study": {"sampler": "grid"}}, "study.sampler"),
        ({"study": {"seeds": ["resnet"]}}, "study.seeds"),
        ({"space": {"families": ["rnn"]}}, "space.families"),
    ],
)
def test_bad_study_refused_naming_the_key(raw, key):
    with pytest.raises(MincapError, match=key.replace(".", r"\.")):
        parse_study(raw)


def test_bad_study_file_cli_one_line_exit_2(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text('[study]\nname = "x"\ncolour = "blue"\n')
    assert main(["search", str(f), "--trials", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "colour" in err[0]
    f.write_text("[study\n")
    assert main(["summary", str(f)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "missing.toml")]) == 2
