"""Mutual-information estimators for layer activations, all in bits.

Three named estimators, each giving I(X;T), I(T;Y) and I(A;B) for two layers:

- `bin` (Shwartz-Ziv & Tishby 2017): each unit's activation is cut into `bins` equal bins
  over a range (the activation's own range when it is bounded, e.g. [-1, 1] for tanh,
  else the observed [min, max] of the layer), and the plug-in entropy of the binned
  vectors is used. For a deterministic network on N distinct inputs, H(T_binned | X) = 0,
  so I(X;T) = H(T_binned) <= log2 N: the estimate measures how many inputs the bins tell
  apart, not a property of the network alone. It is exactly the discrete MI of a copy of
  the network whose activations are quantized to `bins` levels.
- `kde` (Kolchinsky & Tracey 2017, as used by Saxe et al. 2018): T is replaced by
  T + N(0, noise_var * I); the entropy of that Gaussian mixture (one component per
  sample) is bounded above by the pairwise-KL estimator, so I(X;T+noise) <=
  -mean_i log mean_j exp(-|t_i - t_j|^2 / (2 noise_var)) (the noise entropy cancels).
  `kde_entropy_bits(lower=True)` is the matching Bhattacharyya lower bound. I(T;Y) is
  Saxe et al.'s difference of upper bounds, H_up(T) - sum_y p(y) H_up(T | Y=y): not itself
  a bound, but never above the plug-in H(Y). Both are <= log2 N. In a wide layer the
  distances dwarf a fixed noise and every sample is its own component: the estimate
  saturates at log2 N.
- `kde-rel`: the same with each layer's squared distances divided by their mean over pairs
  (2 x the layer's total variance), so `noise_var` is the noise relative to the layer's
  spread: scale-free, comparable across layers of any width, not saturated by width alone.
- `exact`: the activations' own values, no bins: the exact plug-in MI of the empirical
  distribution on the sample. For float activations almost every input gives a distinct
  vector, so I(X;T) = log2 N except where the layer merges inputs (dead ReLUs, quantized or
  saturated units, the arg-max). It says what this network does on these N inputs; it
  says nothing about the population MI, which for a deterministic net with continuous
  inputs is infinite (or H(X) for discrete inputs).

For two layers A, B the estimate is H(A) + H(B) - H(A, B) with the same estimator; for
`kde` the pair (A + noise, B + noise) is one mixture whose squared distances add.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_NOISE_VAR",
    "ESTIMATORS",
    "bin_codes",
    "entropy_bits",
    "kde_entropy_bits",
    "kde_mi_bits",
    "label_entropy_bits",
    "layer_mi",
    "mi_bits",
    "sq_dists",
]

ESTIMATORS = ("bin", "kde", "kde-rel", "exact")
DEFAULT_BINS = 30  # Shwartz-Ziv & Tishby's 30 bins over tanh's [-1, 1]
DEFAULT_NOISE_VAR = 0.1  # the noise variance of Saxe et al.'s MNIST KDE code (noise_variance = 1e-1)
LN2 = math.log(2.0)


def _rows(codes: np.ndarray) -> np.ndarray:
    """One hashable item per row (bytes of the row), so equal vectors count as one symbol."""
    a = np.ascontiguousarray(codes.reshape(len(codes), -1))
    return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()


def _bytes(codes: np.ndarray) -> np.ndarray:
    """The rows of `codes` as raw bytes (N x k uint8), so rows of any dtype can be joined."""
    return np.ascontiguousarray(np.asarray(codes).reshape(len(codes), -1)).view(np.uint8)


def entropy_bits(codes: np.ndarray) -> float:
    """Plug-in entropy of the rows of `codes` (each row one symbol), uniform weight per row."""
    _, counts = np.unique(_rows(codes), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mi_bits(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in I(A;B) = H(A) + H(B) - H(A,B) of paired discrete rows."""
    a2, b2 = _bytes(a), _bytes(b)
    return entropy_bits(a2) + entropy_bits(b2) - entropy_bits(np.concatenate([a2, b2], axis=1))


def label_entropy_bits(y: np.ndarray) -> float:
    """H(Y) of the sample's labels: the ceiling of every I(T;Y) here."""
    return entropy_bits(np.asarray(y).reshape(-1, 1))


def bin_codes(t: np.ndarray, bins: int, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Each value's bin index in `bins` equal bins over [lo, hi] (default: the observed range)."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    lo = float(t.min()) if lo is None else lo
    hi = float(t.max()) if hi is None else hi
    width = (hi - lo) / bins or 1.0  # a constant layer: one bin
    return np.clip(np.floor((t - lo) / width), 0, bins - 1).astype(np.int16)


def sq_dists(t: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of `t` (float64, N x N)."""
    t = t.reshape(len(t), -1).astype(np.float64)
    sq = (t * t).sum(1)
    d = sq[:, None] + sq[None, :] - 2.0 * (t @ t.T)
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0)


def _mean_log_mean_exp(a: np.ndarray) -> float:
    m = a.max(axis=1, keepdims=True)
    return float((m[:, 0] + np.log(np.exp(a - m).mean(axis=1))).mean())


def kde_entropy_bits(d2: np.ndarray, noise_var: float, *, lower: bool = False) -> float:
    """H(T + noise) - H(noise) of the mixture with these squared distances: the pairwise-KL
    upper bound, or with `lower` the Bhattacharyya lower bound (Kolchinsky & Tracey 2017)."""
    scale = (8.0 if lower else 2.0) * noise_var
    return -_mean_log_mean_exp(-d2 / scale) / LN2


def kde_mi_bits(d2_a: np.ndarray, d2_b: np.ndarray, noise_var: float) -> float:
    """H(A) + H(B) - H(A, B) with the KL estimator, noise of `noise_var` on every unit."""
    return (kde_entropy_bits(d2_a, noise_var) + kde_entropy_bits(d2_b, noise_var)
            - kde_entropy_bits(d2_a + d2_b, noise_var))


def _kde_xt_ty(d2: np.ndarray, y: np.ndarray, noise_var: float) -> tuple[float, float]:
    h = kde_entropy_bits(d2, noise_var)
    h_given_y = 0.0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        h_given_y += len(idx) / len(y) * kde_entropy_bits(d2[np.ix_(idx, idx)], noise_var)
    return h, h - h_given_y


def layer_mi(layers: list[np.ndarray], y: np.ndarray, estimator: str, *, bins: int = DEFAULT_BINS,
             noise_var: float = DEFAULT_NOISE_VAR,
             bounds: list[tuple[float, float] | None] | None = None) -> list[dict]:
    """For each layer (N x d activations, same N inputs): i_xt_bits, i_ty_bits, i_next_bits
    (MI with the following layer, None for the last), by `estimator`.

    `bounds[l]` fixes layer l's binning range (None: the observed range); `bin` only.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    y = np.asarray(y).reshape(-1)
    out = []
    if estimator in ("kde", "kde-rel"):
        d2 = [sq_dists(t) for t in layers]
        if estimator == "kde-rel":
            d2 = [d / (d.sum() / max(1, d.size - len(d)) or 1.0) for d in d2]
        for i, d in enumerate(d2):
            xt, ty = _kde_xt_ty(d, y, noise_var)
            nxt = kde_mi_bits(d, d2[i + 1], noise_var) if i + 1 < len(d2) else None
            out.append({"i_xt_bits": xt, "i_ty_bits": ty, "i_next_bits": nxt})
        return out
    if estimator == "bin":
        bounds = bounds or [None] * len(layers)
        codes = [bin_codes(t, bins, *(b or (None, None))) for t, b in zip(layers, bounds)]
    else:
        codes = [np.ascontiguousarray(t.reshape(len(t), -1)) for t in layers]
    for i, c in enumerate(codes):
        h = entropy_bits(c)  # = I(X;T) for a deterministic layer on distinct inputs
        nxt = mi_bits(c, codes[i + 1]) if i + 1 < len(codes) else None
        out.append({"i_xt_bits": h, "i_ty_bits": mi_bits(c, y.astype(np.int64)), "i_next_bits": nxt})
    return out
