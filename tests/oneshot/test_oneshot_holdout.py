"""Nothing in the one-shot search reads the test set: supernet training, trials, promotion."""

from __future__ import annotations

import optuna
from optuna.artifacts import FileSystemArtifactStore

from mincap import data
from mincap.evaluation import holdout
from mincap.oneshot.space import SupernetSpace
from mincap.oneshot.trainer import SupernetRecipe, train_supernet
from mincap.oneshot.trial import OneshotObjective, OneshotSettings

SPACE = SupernetSpace(widths0=(2, 4), widths=(2, 4), depth=(2, 3))  # 28x28 MNIST, tiny widths


def test_supernet_trials_and_promotion_never_read_the_test_set(mnist_root, tmp_path, monkeypatch,
                                                               test_reads):
    # Sealed, a read through the holdout door raises; `test_reads` sees any read below it.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    with holdout.sealed():
        splits = data.load("mnist", root=mnist_root, limit=768)
        recipe = SupernetRecipe(epochs=2, batch_size=128, qat_fraction=0.5)
        run = train_supernet(SPACE, splits, recipe, limit=768, root=tmp_path, progress=False)
        study = optuna.create_study(directions=["minimize", "maximize"],
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        # target 0: the first trial is promoted (nothing feasible before it): fine-tuning runs too
        settings = OneshotSettings(target=0.0, finetune_epochs=1, calib_images=500)
        store = FileSystemArtifactStore(str(tmp_path))
        study.optimize(OneshotObjective(run, splits, store, settings), n_trials=2)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert "finetune" in study.trials[0].user_attrs
    assert test_reads and all(train for _, train in test_reads), test_reads
