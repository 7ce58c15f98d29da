"""Where a file storage's artifacts are written and found: beside the storage file, and, for studies
that ran with `--storage FILE` before that rule, beside the study file."""

import io
from types import SimpleNamespace

import pytest
from machines import write_study

from mincap.config.study import load_study_file
from mincap.errors import MincapError
from mincap.search.storage import artifact_bytes, artifact_store


def test_new_artifacts_go_beside_the_storage_and_old_ones_are_still_read(tmp_path):
    cfg = load_study_file(write_study(tmp_path / "machine"))
    url = f"sqlite:///{tmp_path / 'shared' / 'many.db'}"
    store = artifact_store(cfg, url)
    assert (tmp_path / "shared" / "many.artifacts").is_dir()
    old = cfg.artifacts_dir  # where a `--storage` study's files went before
    old.mkdir()
    (old / "old-id").write_bytes(b"old bytes")
    store.write("new-id", io.BytesIO(b"new bytes"))
    trial = SimpleNamespace(number=3, user_attrs={"artifact_id": "new-id"})
    assert artifact_bytes(cfg, trial, url) == b"new bytes"
    trial.user_attrs["artifact_id"] = "old-id"
    assert artifact_bytes(cfg, trial, url) == b"old bytes"
    trial.user_attrs["artifact_id"] = "gone"
    with pytest.raises(MincapError, match=r"trial 3: artifact gone is in none of: .*shared/many.artifacts, .*machine/many.artifacts"):
        artifact_bytes(cfg, trial, url)


def test_a_journal_keeps_its_artifacts_beside_it(tmp_path):
    cfg = load_study_file(write_study(tmp_path / "machine"))
    artifact_store(cfg, str(tmp_path / "shared" / "s.journal"))
    assert (tmp_path / "shared" / "many.artifacts").is_dir() and not cfg.artifacts_dir.exists()
