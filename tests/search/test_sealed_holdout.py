"""With the test set sealed (`mincap.evaluation.holdout.sealed`), a search, its replicates, an entropy
estimate and a compression path all run to the end and read no test image."""

from test_search import _trials, make_study

from mincap import data
from mincap.cli import main
from mincap.compression.path import compression_path
from mincap.config import CompressConfig, TrainConfig
from mincap.config.study import load_study_file
from mincap.entropy import estimate
from mincap.evaluation import holdout
from mincap.nets.models import parse_arch
from mincap.search import replicates
from mincap.search.storage import open_study


def test_search_replicates_entropy_and_path_never_read_the_test_set(tmp_path, mnist_root, test_reads,
                                                                     monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # entropy: computed, not a cached record
    f = make_study(tmp_path, name="sealed", target=0.5)
    with holdout.sealed():
        assert main(["search", str(f), "--trials", "2", "--no-progress", "--data-dir", str(mnist_root)]) == 0
        cfg = load_study_file(f)
        trials = _trials(f)
        assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]  # a refused read fails a trial
        trial = trials[0]
        r = replicates.replicate_trial(open_study(cfg, create=False), trial, cfg, k=1, data_dir=str(mnist_root))
        assert r["k"] == 1
        e = estimate("mnist", "pixels", root=str(mnist_root), use_cache=False)
        assert e.bits_per_example > 0
        splits = data.load("mnist", root=mnist_root, limit=500, n_val=500)
        path = compression_path(parse_arch("mlp-32"), splits, TrainConfig(epochs=1, seed=0), CompressConfig(bits=4),
                                steps="prune=0.25", target=0.0)
        assert len(path.steps) == 2
    assert [p for p in test_reads if not p[1]] == []  # no test part read, not even from a cache miss
    assert ("mnist", True) in test_reads
