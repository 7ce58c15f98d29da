import glob
from pathlib import Path

import pytest

from mincap.cli import main
from mincap.config.study import DEFAULT_STUDY, StudyConfig, load_study_file, parse_study
from mincap.errors import MincapError
from mincap.search.storage import CONFIG_ATTR, open_study, stored_config

STUDY_FILES = sorted(glob.glob("studies/*.toml") + glob.glob("studies/*/*.toml"))


def test_the_cli_default_is_the_default_study_file():
    from mincap.cli.study import DEFAULT_STUDY_FILE

    assert Path(DEFAULT_STUDY_FILE) == DEFAULT_STUDY and DEFAULT_STUDY.as_posix() in STUDY_FILES


@pytest.mark.parametrize("path", STUDY_FILES)
def test_committed_study_files_resume_the_search_their_database_holds(path):
    """A study file and its database are one search: resuming it must continue the same one. So a
    changed space, target, dataset or split means a new study name (and database); the old study
    keeps its file in studies/history/. Each committed file opens its committed database, and where
    the study kept the file it was made with (`stored_config`), that file searched what this one does."""
    cfg = load_study_file(path)
    assert cfg.storage_url == f"sqlite:///{Path(path).resolve().parent / cfg.study.name}.db"
    study = open_study(cfg, create=False)  # refuses a study that is not there
    assert study.user_attrs["target"] == cfg.study.target and study.user_attrs["dataset"] == cfg.study.dataset
    if CONFIG_ATTR in study.user_attrs:
        made = stored_config(cfg.storage_url, cfg.study.name)
        assert (made.space, made.study.target, made.study.dataset, made.data, made.oneshot) == \
            (cfg.space, cfg.study.target, cfg.study.dataset, cfg.data, cfg.oneshot)


def test_a_study_file_names_its_database_beside_itself(tmp_path):
    f = tmp_path / "deep" / "s.toml"
    f.parent.mkdir()
    f.write_text('[study]\nname = "s-v2"\n')
    cfg = load_study_file(f)
    assert cfg.storage_url == f"sqlite:///{f.parent.resolve() / 's-v2.db'}"
    assert cfg.artifacts_dir == f.parent.resolve() / "s-v2.artifacts"
    f.write_text('[study]\nname = "s-v2"\n[storage]\nurl = "sqlite:///elsewhere.db"\nartifacts = "arts"\n')
    cfg = load_study_file(f)
    assert cfg.storage_url == "sqlite:///elsewhere.db" and cfg.artifacts_dir == f.parent.resolve() / "arts"


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
