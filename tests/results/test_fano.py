"""Fano's bound as a check on the size accounting (issue 17): no random-label network may be smaller
than the bits its accuracy requires. Checked for every random-label network the committed studies
found (studies/capacity/) and, so that the check never runs on nothing, for a memorizer trained here."""

import math
from pathlib import Path

import pytest

from mincap import data
from mincap.compression.qat import train_compressed
from mincap.config import CompressConfig, TrainConfig
from mincap.config.study import load_study_file
from mincap.format.container import decode
from mincap.nets.models import Spec
from mincap.results.capacity import (
    fano_bits_per_label,
    fano_bound_bits,
    mackay_weights,
    memorized_n,
)
from mincap.results.stored import load_summary
from mincap.search.storage import artifact_bytes, open_study
from mincap.training.engine import evaluate

CAPACITY = Path(__file__).resolve().parents[2] / "studies" / "capacity"


# --- the bound itself ----------------------------------------------------------------------


def test_fano_values():
    assert fano_bits_per_label(1.0) == pytest.approx(math.log2(10))
    assert fano_bits_per_label(0.1) == 0.0 and fano_bits_per_label(0.05) == 0.0  # chance needs nothing
    a = 0.9
    want = math.log2(10) + a * math.log2(a) + (1 - a) * math.log2(1 - a) - (1 - a) * math.log2(9)
    assert fano_bound_bits(256, a) == pytest.approx(256 * want)
    accs = [0.1 + 0.05 * i for i in range(19)]
    vals = [fano_bits_per_label(x) for x in accs]
    assert all(u < v for u, v in zip(vals, vals[1:]))  # strictly increasing above chance
    assert fano_bits_per_label(1.0, 2) == pytest.approx(1.0) and mackay_weights(256) == pytest.approx(256 * 1.660964, 1e-6)
    with pytest.raises(ValueError):
        fano_bits_per_label(1.5)


@pytest.mark.parametrize("n,acc", [(20, 0.5), (64, 0.75), (200, 0.9), (256, 1.0)])
def test_fano_is_below_the_counting_bound(n, acc):
    """Counting: fewer than 2^(L+1) files of <= L bits, each within (1-a)N errors of sum_j C(N,j) 9^j
    labellings; so L >= N log2 10 - log2(that sum) - 1 for most labellings, which is >= Fano - 1."""
    errors = math.floor((1 - acc) * n + 1e-9)
    ball = sum(math.comb(n, j) * 9 ** j for j in range(errors + 1))
    counting = n * math.log2(10) - math.log2(ball) - 1
    assert counting >= fano_bound_bits(n, acc) - 1 - 1e-9


# --- every random-label network found ------------------------------------------------------


def _check(name: str, n: int, bits: int, acc: float, failures: list) -> None:
    bound = fano_bound_bits(n, acc)
    if bits < bound:
        failures.append(f"{name}: {bits:,} bits at {acc:.4f} on N={n}, below Fano's {bound:,.0f}")


def committed_networks(mnist_root, folder: Path = CAPACITY) -> tuple[int, list[str]]:
    """Check every complete trial (and every recorded path step) of every committed capacity study by
    its recorded size and accuracy, and re-measure the Pareto front's artifacts by decoding them: a
    network under the bound would put one on the front, which is then decoded and measured here.
    Returns (networks checked, failures)."""
    checked, failures = 0, []
    for summary in sorted(folder.glob("*.summary.json")):
        s = load_summary(summary)
        n = memorized_n(s["dataset"])
        assert n, f"{summary}: {s['dataset']} is not a random-label set"
        cfg = load_study_file(summary.with_name(summary.name.removesuffix(".summary.json") + ".toml"))
        study = open_study(cfg, create=False)
        splits = data.load(s["dataset"], root=mnist_root, n_val=n)
        assert splits.memorization and len(splits.val) == n
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        for t in by_number.values():
            if t.state.name != "COMPLETE" or not t.values:
                continue
            _check(f"{cfg.study.name} trial {t.number}", n, t.user_attrs["artifact_bits"], t.user_attrs["val_acc"],
                   failures)
            for step in (t.user_attrs.get("path") or {}).get("steps", []):
                if step.get("artifact_bits") is not None and step.get("val_acc") is not None:
                    _check(f"{cfg.study.name} trial {t.number} step", n, step["artifact_bits"], step["val_acc"],
                           failures)
            checked += 1
        for row in s["pareto_front"] + ([s["chosen"]] if s.get("chosen") else []):
            blob = artifact_bytes(cfg, by_number[row["trial"]])
            acc, _ = evaluate(decode(blob).model, splits.val)
            assert 8 * len(blob) == row["artifact_bits"], f"{summary} trial {row['trial']}: file size differs"
            assert acc == pytest.approx(row["val_acc"], abs=1e-9), f"{summary} trial {row['trial']}: accuracy differs"
            _check(f"{cfg.study.name} trial {row['trial']} (decoded)", n, 8 * len(blob), acc, failures)
    return checked, failures


def trained_memorizer(mnist_root) -> tuple[int, float, int]:
    """A small MLP memorizing mnist-random-256 at 3 bits (seconds): (file bits, decoded accuracy, N)."""
    splits = data.load("mnist-random-256", root=mnist_root, n_val=256)
    spec = Spec("mlp", (), (4,)).with_data(splits.in_shape, splits.n_classes)
    res = train_compressed(spec, splits, TrainConfig(epochs=120, batch_size=64, lr=0.02, weight_decay=1e-6,
                                                     augment_shift=0, seed=0),
                           CompressConfig(bits=3, qat_epochs=30, quantizer="lsq", anneal_epochs=5))
    acc, _ = evaluate(decode(res.artifact).model, splits.val)
    return 8 * len(res.artifact), acc, 256


def test_no_random_label_network_is_below_fano(mnist_root):
    bits, acc, n = trained_memorizer(mnist_root)
    # It must have memorized something, or the check below would compare against a bound of ~0.
    assert acc > 0.5 and fano_bound_bits(n, acc) > 200
    failures: list[str] = []
    _check("memorizer trained in this test", n, bits, acc, failures)
    checked, committed_failures = committed_networks(mnist_root)
    assert not failures + committed_failures, "\n".join(failures + committed_failures)
    studies = sorted(CAPACITY.glob("*.summary.json"))
    assert checked >= len(studies)  # every committed study contributed at least one network
