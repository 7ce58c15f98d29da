"""The CUDA defaults on the CPU: `mincap search` at the group size it takes on CUDA, with the
default study's seeds on a tiny slice of MNIST, and trials the batched engine cannot train run
alone.

The group size CUDA gets is `group_size(0, "cuda")`; passing it as `batch_trials` with the
device still the CPU runs exactly the path a GPU machine runs, minus the GPU.
"""

import re
from pathlib import Path

import optuna
from machines import STUDY

from mincap.cli import main
from mincap.config.study import load_study_file
from mincap.search import SearchOptions, open_study, run_search
from mincap.search import run as search_run

REPO = Path(__file__).resolve().parents[2]
CUDA_GROUP = search_run.group_size(0, "cuda")


def _sub(pattern: str, repl: str, text: str) -> str:
    out, n = re.subn(pattern, repl, text, flags=re.M)
    assert n, f"studies/mnist-99.toml no longer has {pattern!r}: update this test"
    return out


def default_study(tmp_path: Path, name: str) -> Path:
    """studies/mnist-99.toml with its seeds' specs and space, on 300 images and 1-epoch seeds;
    its storage beside the copy (the default: <name>.db next to the study file)."""
    text = (REPO / "studies" / "mnist-99.toml").read_text()
    text = _sub(r'^name = "[^"]+"', f'name = "{name}"', text)
    text = _sub(r"epochs=\d+", "epochs=1", text)  # the seeds' own overrides
    text = _sub(r"^epochs = 50\b", "epochs = 1", text)  # [seed_recipe]
    text = _sub(r"^epochs = \[10, 80\]", "epochs = [1, 2]", text)  # [space]
    text = _sub(r"^n_val = 5000", "n_val = 300\nlimit = 300", text)
    f = tmp_path / f"{name}.toml"
    f.write_text(text)
    return f


def _trials(cfg):
    return optuna.load_study(study_name=cfg.study.name, storage=cfg.storage_url).get_trials()


def test_the_default_study_at_the_cuda_group_size(tmp_path, mnist_root, capsys):
    """Every seed COMPLETE; one line says the trials train one at a time, and why."""
    cfg = load_study_file(default_study(tmp_path, "cuda-defaults"))
    n = len(cfg.study.seeds)
    opts = SearchOptions(
        trials=n, device="cpu", batch_trials=CUDA_GROUP, data_dir=str(mnist_root), progress=False
    )
    res = run_search(cfg, opts)
    trials = _trials(cfg)
    assert [t.state.name for t in trials] == ["COMPLETE"] * n, [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    assert sorted(t.user_attrs["seed_preset"] for t in trials) == sorted(cfg.study.seeds)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "one at a time" in ln]
    assert lines == [
        "mincap search: all trials train one at a time, not in batched groups of "
        f"{CUDA_GROUP}: this "
        "study uses the lsq quantizer, bit annealing, [fidelity] screening, which the batched "
        "engine does not train"
    ]
    assert res["trials_run"] == n and not res["unbatched"]


def test_the_batched_loop_routes_the_default_seeds_alone(tmp_path, mnist_root):
    """The batched loop itself (what a study the shortcut above lets through runs): a separable seed
    is trained one at a time inside it, not failed."""
    cfg = load_study_file(default_study(tmp_path, "cuda-loop"))
    study = open_study(cfg)
    search_run.enqueue_seeds(study, cfg)
    opts = SearchOptions(
        device="cpu", batch_trials=CUDA_GROUP, data_dir=str(mnist_root), progress=False
    )
    search_run.run_worker(cfg, opts, 2, 0, 1)
    done = [t for t in _trials(cfg) if t.state.name != "WAITING"]
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE"], [
        t.user_attrs.get("fail_reason") for t in done
    ]
    assert all(t.user_attrs["unbatched"] == "depthwise-separable blocks" for t in done)


MIXED = [
    {
        "family": "mlp",
        "activation": "relu",
        "mlp_depth": 1,
        "m0": w,
        "bits0": 4,
        "bits1": 4,
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.01,
        "weight_decay": 1e-4,
        "augment": 0,
        "qat_fraction": 0.5,
        "quantizer": q,
        "anneal_epochs": a,
    }
    for w, q, a in [(8, "max", 0), (16, "lsq", 0), (24, "max", 1), (32, "max", 0)]
]


def _mixed_run(tmp_path, mnist_root, name: str, batch_trials: int, capsys) -> tuple[dict, str]:
    f = tmp_path / f"{name}.toml"
    f.write_text(
        STUDY.format(name=name, target=0.6, seeds="[]", limit=300, epochs=2).replace(
            "bits = [3, 6]", 'bits = [3, 6]\nquantizers = ["max", "lsq"]\nanneal_epochs = [0, 1]'
        )
        + "[early_stop]\nenabled = false\n"
    )
    cfg = load_study_file(f)
    study = open_study(cfg)
    for p in MIXED:
        study.enqueue_trial(p)
    capsys.readouterr()
    assert (
        main(
            [
                "search",
                str(f),
                "--trials",
                "4",
                "--batch-trials",
                str(batch_trials),
                "--no-progress",
                "--data-dir",
                str(mnist_root),
            ]
        )
        == 0
    )
    return {t.number: t for t in _trials(cfg)}, capsys.readouterr().err


def test_a_mixed_group_batches_what_it_can_and_runs_the_rest_alone(tmp_path, mnist_root, capsys):
    """The lsq trial and the annealed one train alone -- bit-identically to a one-at-a-time run, as
    the same code runs them -- the other two as one group; one line counts them."""
    solo, _ = _mixed_run(tmp_path, mnist_root, "mixed-solo", 1, capsys)
    mixed, err = _mixed_run(tmp_path, mnist_root, "mixed-batched", 4, capsys)
    assert [t.state.name for t in mixed.values()] == ["COMPLETE"] * 4, [
        t.user_attrs.get("fail_reason") for t in mixed.values()
    ]
    assert mixed[1].user_attrs["unbatched"] == "the lsq quantizer"
    assert mixed[2].user_attrs["unbatched"] == "bit annealing"
    assert mixed[0].user_attrs["batch_group"] == mixed[3].user_attrs["batch_group"] == [0, 2]
    for n in (1, 2):
        assert "batch_group" not in mixed[n].user_attrs
        assert mixed[n].values == solo[n].values
    for n in (0, 3):  # float noise only (tests/search/test_batched_search.py)
        assert abs(mixed[n].values[1] - solo[n].values[1]) <= 0.01
    assert (
        "mincap search: 2 of 4 trial(s) trained one at a time, not in a batched group: "
        "the batched engine "
        "does not train the lsq quantizer (1), bit annealing (1)"
    ) in err.splitlines()


def test_draws_that_are_no_network_do_not_use_up_the_batched_budget(tmp_path, mnist_root):
    """Four unpadded 5x5 blocks leave no pixels of a 28x28 image: such draws are PRUNED untrained
    and the two trials asked for are two networks."""
    f = tmp_path / "nonet.toml"
    f.write_text(
        STUDY.format(name="nonet", target=0.6, seeds="[]", limit=300, epochs=1)
        .replace(
            'families = ["mlp"]',
            'families = ["cnn"]\nconv_depth = [4, 4]\nchannels = [2, 4]\n'
            'kernels = [3, 5]\npadding = ["valid"]\npools = [2, 2]\nheads = ["gap"]\n'
            "hidden_depth = [0, 0]",
        )
        .replace("batch_size = [32, 64]", "batch_size = [64, 64]")
    )
    cfg = load_study_file(f)
    study = open_study(cfg)
    for _ in range(2):
        study.enqueue_trial({f"k{i}": 5 for i in range(4)})
    assert (
        main(
            [
                "search",
                str(f),
                "--trials",
                "2",
                "--batch-trials",
                "2",
                "--no-progress",
                "--data-dir",
                str(mnist_root),
            ]
        )
        == 0
    )
    trials = _trials(cfg)
    nonet = [t for t in trials if t.user_attrs.get("stop_reason", "").startswith("not a network")]
    assert len(nonet) >= 2 and all(t.state.name == "PRUNED" for t in nonet)
    assert [t.state.name for t in trials if t not in nonet] == ["COMPLETE", "COMPLETE"]
