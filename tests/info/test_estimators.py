"""The estimators against quantities known in closed form or by theorem (issue 18)."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

from mincap.info.activations import layer_activations
from mincap.info.estimators import (
    ESTIMATORS,
    bin_codes,
    entropy_bits,
    kde_entropy_bits,
    label_entropy_bits,
    layer_mi,
    mi_bits,
    sq_dists,
)
from mincap.nets.models import Spec, build


def _gaussians(rho: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    z = np.random.default_rng(seed).standard_normal((n, 2))
    return z[:, 0], rho * z[:, 0] + math.sqrt(1 - rho * rho) * z[:, 1]


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_binning_recovers_gaussian_mi(rho):
    # 30 bins over [-4, 4] on 20,000 pairs: the discretization loses < 0.03 bits at rho 0.9 and the
    # plug-in bias adds ~ (bins-1)^2 / (2 N ln 2) = 0.03 bits; measured error <= 0.026 bits.
    x, y = _gaussians(rho, 20_000)
    est = mi_bits(bin_codes(x, 30, -4, 4)[:, None], bin_codes(y, 30, -4, 4)[:, None])
    assert est == pytest.approx(-0.5 * math.log2(1 - rho * rho), abs=0.05)


def test_binning_too_coarse_loses_information():
    # 4 bins cannot hold 1.2 bits of dependence: the estimate must fall well short (data processing).
    x, y = _gaussians(0.9, 20_000)
    assert mi_bits(bin_codes(x, 4, -4, 4)[:, None], bin_codes(y, 4, -4, 4)[:, None]) < 1.198 - 0.3


@pytest.mark.parametrize("noise_var", [0.01, 0.1, 1.0])
def test_kde_bounds_sandwich_the_mixture_entropy(noise_var):
    # Kolchinsky & Tracey 2017: for a Gaussian mixture, BD lower bound <= H <= KL upper bound. The
    # true H(T + noise) - H(noise) of a 1-D mixture of 40 points is integrated on a fine grid.
    c = np.random.default_rng(1).uniform(-2, 2, 40)
    s = math.sqrt(noise_var)
    grid = np.linspace(c.min() - 8 * s, c.max() + 8 * s, 200_001)
    p = np.exp(-((grid[:, None] - c[None, :]) ** 2) / (2 * noise_var)).mean(1) / math.sqrt(2 * math.pi * noise_var)
    h_true = -np.sum(p * np.log2(np.maximum(p, 1e-300))) * (grid[1] - grid[0])
    h_noise = 0.5 * math.log2(2 * math.pi * math.e * noise_var)
    d2 = sq_dists(c[:, None])
    lower, upper = kde_entropy_bits(d2, noise_var, lower=True), kde_entropy_bits(d2, noise_var)
    assert lower - 1e-6 <= h_true - h_noise <= upper + 1e-6
    assert upper - lower > 0.01  # the two bounds are distinct quantities, not one number twice


def test_entropy_and_mi_of_known_discrete_variables():
    a = np.repeat(np.arange(8), 4)  # uniform on 8 symbols
    assert entropy_bits(a[:, None]) == pytest.approx(3.0)
    assert mi_bits(a[:, None], (a % 2)[:, None]) == pytest.approx(1.0)  # the parity is one bit of a
    assert mi_bits(a[:, None], np.tile([0, 1], 16)[:, None]) == pytest.approx(0.0)  # independent


def _net_and_data(activation: str, n: int = 300, seed: int = 0):
    torch.manual_seed(seed)
    spec = Spec(family="mlp", hidden=(12, 8, 6), activation=activation, in_shape=(1, 1, 16), n_classes=3)
    net = build(spec)
    x = torch.randint(0, 256, (n, 1, 1, 16), dtype=torch.uint8)
    y = np.random.default_rng(seed).integers(0, 3, n)
    return net, x, y


def _h_counts(symbols) -> float:
    """Plug-in entropy in bits of a sequence of hashable symbols."""
    n = len(symbols)
    return -math.fsum(c / n * math.log2(c / n) for c in Counter(symbols).values())


def _h_kde(t: np.ndarray, noise_var: float, rel_scale: float = 1.0) -> float:
    """The pairwise-KL upper bound on H(T + noise) - H(noise), from its formula term by term:
    -mean_i log2 mean_j exp(-|t_i - t_j|^2 / (2 noise_var)), distances from the differences."""
    d2 = ((t[:, None, :] - t[None, :, :]) ** 2).sum(-1) / rel_scale
    return float(-np.mean(np.log2(np.mean(np.exp(-d2 / (2 * noise_var)), axis=1))))


def _direct(layers, y, estimator: str, bins: int, noise_var: float) -> list[tuple]:
    """(I(X;T), I(T;Y), I(T;T_next)) per layer, computed here without the estimators module."""
    ts = [lay.values.reshape(len(y), -1).astype(np.float64) for lay in layers]
    if estimator in ("kde", "kde-rel"):
        n = len(y)
        scales = [1.0] * len(ts)
        if estimator == "kde-rel":  # each layer's squared distances over their mean over pairs i != j
            scales = [((t[:, None, :] - t[None, :, :]) ** 2).sum(-1).sum() / (n * n - n) or 1.0 for t in ts]

        def h(i, rows=slice(None)):
            return _h_kde(ts[i][rows], noise_var, scales[i])

        out = []
        for i in range(len(ts)):
            h_y = sum(np.mean(y == c) * h(i, y == c) for c in np.unique(y))
            nxt = None
            if i + 1 < len(ts):
                both = np.concatenate([ts[i] / math.sqrt(scales[i]), ts[i + 1] / math.sqrt(scales[i + 1])], axis=1)
                nxt = h(i) + h(i + 1) - _h_kde(both, noise_var)
            out.append((h(i), h(i) - h_y, nxt))
        return out
    syms = []
    for t, lay in zip(ts, layers):
        if estimator == "bin":
            lo, hi = lay.bounds or (t.min(), t.max())
            t = np.clip(np.floor((t - lo) / ((hi - lo) / bins)), 0, bins - 1)
        syms.append([tuple(row) for row in t])
    labels = list(y)

    def mi(a, b):
        return _h_counts(a) + _h_counts(b) - _h_counts(list(zip(a, b)))

    return [(_h_counts(a), mi(a, labels), mi(a, syms[i + 1]) if i + 1 < len(syms) else None)
            for i, a in enumerate(syms)]


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_ceilings_hold_and_estimates_equal_a_direct_computation(activation, estimator):
    # I(X;T) <= log2 N on N distinct inputs and I(T;Y) <= H(Y): the ceilings printed beside every figure.
    # A ceiling alone lets an estimator that says 0 pass: each value must also equal its definition
    # computed here (plug-in counts of bin codes or of the raw vectors; the KL bound term by term).
    net, x, y = _net_and_data(activation)
    assert len(np.unique(x.reshape(len(x), -1).numpy(), axis=0)) == len(x)
    layers = layer_activations(net, x)
    assert [lay.name for lay in layers] == ["fc1", "fc2", "fc3", "logits"]
    rows = layer_mi([lay.values for lay in layers], y, estimator, bins=10, noise_var=0.1,
                    bounds=[lay.bounds for lay in layers])
    h_y = label_entropy_bits(y)
    for r in rows:
        assert -1e-9 <= r["i_xt_bits"] <= math.log2(len(x)) + 1e-9
        assert -1e-9 <= r["i_ty_bits"] <= h_y + 1e-9
    assert rows[-1]["i_next_bits"] is None and all(r["i_next_bits"] is not None for r in rows[:-1])
    want = [v for row in _direct(layers, y, estimator, bins=10, noise_var=0.1) for v in row if v is not None]
    got = [r[k] for r in rows for k in ("i_xt_bits", "i_ty_bits", "i_next_bits") if r[k] is not None]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert rows[0]["i_xt_bits"] > 1.0  # 12 units tell many of the 300 inputs apart, by every estimator
    if estimator == "exact":  # float activations of distinct inputs are distinct: both ceilings reached
        assert rows[0]["i_xt_bits"] == pytest.approx(math.log2(len(x))) and rows[0]["i_ty_bits"] == pytest.approx(h_y)


def test_exact_mi_sees_inputs_merged_by_the_network():
    # A ReLU layer with all-negative pre-activations maps every input to 0: exactly 0 bits.
    net, x, y = _net_and_data("relu")
    with torch.no_grad():
        net.classifier[1].bias.fill_(-1e6)
    rows = layer_mi([lay.values for lay in layer_activations(net, x)], y, "exact")
    assert rows[0]["i_xt_bits"] == 0.0 and rows[0]["i_ty_bits"] == 0.0
    assert rows[-1]["i_xt_bits"] == 0.0  # nothing downstream can recover what was merged


def test_binning_uses_tanh_range_and_counts_distinguishable_inputs():
    net, x, y = _net_and_data("tanh")
    layers = layer_activations(net, x)
    assert layers[0].bounds == (-1.0, 1.0) and layers[-1].bounds is None
    one_bin = layer_mi([lay.values for lay in layers], y, "bin", bins=1, bounds=[lay.bounds for lay in layers])
    assert all(r["i_xt_bits"] == 0.0 for r in one_bin)  # one bin cannot tell any inputs apart
    many = layer_mi([lay.values for lay in layers], y, "bin", bins=1000, bounds=[lay.bounds for lay in layers])
    assert many[0]["i_xt_bits"] == pytest.approx(math.log2(len(x)))


def test_kde_rel_is_scale_free_and_kde_is_not():
    net, x, y = _net_and_data("relu")
    t = [lay.values for lay in layer_activations(net, x)]
    scaled = [10.0 * v for v in t]
    rel_a, rel_b = layer_mi(t, y, "kde-rel"), layer_mi(scaled, y, "kde-rel")
    assert [r["i_xt_bits"] for r in rel_a] == pytest.approx([r["i_xt_bits"] for r in rel_b], abs=1e-5)
    abs_a, abs_b = layer_mi(t, y, "kde"), layer_mi(scaled, y, "kde")
    assert abs_b[0]["i_xt_bits"] > abs_a[0]["i_xt_bits"] + 0.1  # wider spread, same noise: more bits


@pytest.mark.parametrize("name", ["tiny", "sep-700", "pytorch-example-2016"])
def test_one_layer_per_block(name):
    from mincap.nets.models import PRESETS

    spec = PRESETS[name]
    torch.manual_seed(0)
    layers = layer_activations(build(spec), torch.randint(0, 256, (5, *spec.in_shape), dtype=torch.uint8))
    names = [lay.name for lay in layers]
    assert names == [f"conv{i + 1}" for i in range(len(spec.convs))] + [f"fc{i + 1}" for i in range(len(spec.hidden))] + [
        "logits"]
    assert layers[-1].values.shape == (5, spec.n_classes)
