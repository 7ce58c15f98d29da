"""The two-part code of a network: its file, then the training labels coded with it.

A receiver who holds the training images and the mincap decoder can get the labels from two
parts: the `.mincap` file (its `artifact_bits`), then Σ −log2 p(y | x) bits for the labels,
coded one by one by an arithmetic coder driven by the decoded network's predictions. The
sum is a real code length for the labels given the images, in bits like the network's size
and like the prequential codes (`mincap.entropy`), so it can stand beside them on the plot.

The labels coded are those of the official training set (all of it: MNIST's 60,000, train
and validation splits alike), the same labels the prequential estimators send. The network
was chosen on those labels' validation part; a two-part code may use any network, the choice
is what its first part pays for.

As in the prequential codes, the network's softmax is read at a temperature T and mixed with
ε of the uniform distribution, p = (1 − ε) softmax(z / T) + ε / K, so one confident mistake
costs at most log2(K / ε) bits; (T, ε) is the cheapest of the fixed `OPTIONS` and its index is
sent first (log2 #options bits, counted in `label_bits`). Coder overhead (a few bits) is
not counted.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from mincap import data
from mincap.entropy.prequential import logits_of, mixed_log_probs
from mincap.errors import MincapError
from mincap.format import container as artifact

__all__ = ["OPTIONS", "label_code_bits", "two_part_code", "two_part_of"]

# (temperature, eps) pairs the sender may pick from: quantized networks can be over- or
# under-confident, so temperatures on both sides of 1.
OPTIONS = tuple(itertools.product((0.5, 0.75, 1.0, 1.5, 2.0, 3.0), (1e-4, 1e-3, 1e-2)))


def label_code_bits(model: torch.nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
                    n_classes: int, options=OPTIONS) -> dict:
    """Σ −log2 p(y | x) under `model` at the cheapest (T, ε) option, plus log2 #options for its index.

    Returns {"label_bits", "option": {"temperature", "eps"}, "n_labels", "errors"}.
    """
    x = torch.as_tensor(np.asarray(x))
    y = torch.as_tensor(np.asarray(y)).long()
    if len(x) != len(y) or not len(y):
        raise MincapError(f"two-part code: need as many labels as images, got {len(x)} and {len(y)}")
    try:
        logits = logits_of(model, x)
    except RuntimeError as err:  # a shape mismatch: the network is for other images
        raise MincapError(f"two-part code: the network does not take these {tuple(x.shape[1:])} images "
                          f"({str(err).splitlines()[0]})") from None
    if logits.shape[1] != n_classes:
        raise MincapError(f"two-part code: the network has {logits.shape[1]} outputs, the data {n_classes} classes")
    best = None
    for t, eps in options:
        bits = float(-mixed_log_probs(logits, y, t, eps, n_classes).sum()) / math.log(2)
        if best is None or bits < best[0]:
            best = (bits, t, eps)
    bits, t, eps = best
    return {"label_bits": bits + math.log2(len(options)), "option": {"temperature": t, "eps": eps},
            "n_labels": len(y), "errors": int((logits.argmax(1) != y).sum())}


def two_part_of(model: torch.nn.Module, artifact_bits: int, dataset: str, *, data_dir=None) -> dict:
    """The two-part code of a decoded network whose file is `artifact_bits` long, on `dataset`'s training labels.

    {"artifact_bits", "label_bits", "total_bits", "n_labels", "labels", "option", "errors"}: all
    deterministic, so a stored figure and a recomputed one are equal.
    """
    x, y = data.load_arrays(dataset, data_dir, True)  # the official training part; never the test set
    out = label_code_bits(model, x, y, data.DATASETS[dataset].n_classes)
    return {"artifact_bits": int(artifact_bits), "label_bits": round(out["label_bits"], 1),
            "total_bits": round(artifact_bits + out["label_bits"], 1), "n_labels": out["n_labels"],
            "labels": f"{dataset} official training set", "option": out["option"], "errors": out["errors"]}


def two_part_code(blob: bytes, dataset: str, *, data_dir=None) -> dict:
    """The two-part code of the network in `blob` (a `.mincap` file's bytes) on `dataset`'s training labels."""
    dec = artifact.decode(blob)
    return two_part_of(dec.model, dec.size["artifact_bits"], dataset, data_dir=data_dir)
