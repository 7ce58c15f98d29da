"""The dataset ladder: variants with controlled, different information content, all offline.

Every variant is derived deterministically from data already on the machine, so
it needs no download, and is registered in `mincap.data.DATASETS` like any other
dataset. Each gets its own train / validation split through `mincap.data.load`
(the seeded permutation of its training part) and its own test set through
`mincap.evaluation.holdout.load_test`. The images stay uint8 (N, 1, H, W), so every network's
fixed input map (pixels / 255, `mincap.nets.models.prepare`) is unchanged.

From MNIST's official training and test sets, separately (the test images never
leak into a training part):

- `mnist-binary`: a pixel becomes 255 when > 127 (i.e. >= 128, half the range,
  the usual deterministic binarization of MNIST), else 0. Values 0/255 keep the
  network's input in {0, 1}. `mincap entropy`'s own default threshold for
  `asker`/`pixels` is "any ink" (> 0, the reading that gives the learner's 191
  bits); on this variant every threshold in 0..254 gives the same binary image,
  the one threshold 127 gives on MNIST (docs/entropy.md: asker 178.31 bits).
- `mnist-14`, `mnist-7`: area averaging of 2x2 / 4x4 blocks, the mean rounded
  half up back to uint8 (`(sum + n // 2) // n`). Labels and order unchanged.
- `mnist-k2` ... `mnist-k9`: only the images whose label is < k, in their
  original order, labels unchanged; `n_classes = k`, label entropy ~ log2 k.

From scikit-learn's bundled copy of the UCI optical digits (no download):

- `digits`: 1,797 8x8 images with values 0..16, scaled to 0..255 by
  `round(v * 255 / 16)`. There is no official test split: a stratified split with
  a fixed seed (`DIGITS_SPLIT_SEED`) holds out `round(0.2 * n_c)` images of each
  class c as the test set (359 images), leaving 1,438 as the "official training"
  part, which `mincap.data.load` splits further into train / validation (the
  study file sets `[data] n_val`, e.g. 300: the default 5,000 is more than the
  whole set).

For the theory behind the question (issue 17):

- `mnist-random-N`, N in `RANDOM_SIZES` (256 ... 4096): the first N MNIST training images
  with labels drawn uniformly from 0..9 (`random_labels`: numpy's legacy `RandomState`,
  whose stream numpy keeps frozen, seed `RANDOM_LABEL_SEED`; the labels of a smaller N are
  the first labels of a larger one). A *memorization set*: there is nothing to generalize,
  so its validation split is its training part itself (`DatasetInfo.memorize`; `data.load`
  refuses any `n_val` but N, so no study can silently hold images out). Its test part is
  the first N official test images with labels drawn the same way from `RANDOM_TEST_SEED`:
  no network can do better than chance (10%) there, a check that memorizing is all it did.
- `mnist-permuted`: one fixed pixel permutation (`pixel_permutation`, seed
  `PERMUTATION_SEED`) applied to every image, training and test alike; labels and order
  unchanged, so its train / validation split holds the same images as MNIST's. An MLP is
  blind to it (permuting its first layer's inputs undoes it); a convolution's locality is not.

Registration happens on import (`mincap.data` imports this module).
"""

from __future__ import annotations

import numpy as np

from mincap.data.registry import DatasetInfo, Roots, load_arrays, register
from mincap.errors import MincapError

__all__ = [
    "BINARY_THRESHOLD",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
    "LADDER",
    "PERMUTATION_SEED",
    "RANDOM_LABEL_SEED",
    "RANDOM_SIZES",
    "RANDOM_TEST_SEED",
    "area_downsample",
    "binarize",
    "digits_arrays",
    "first_classes",
    "permute_pixels",
    "pixel_permutation",
    "random_label_name",
    "random_labels",
    "with_random_labels",
]

BINARY_THRESHOLD = 127  # a pixel is ink (255) when > 127, i.e. >= 128
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
RANDOM_SIZES = (256, 512, 1024, 2048, 4096)  # the random-label rungs (issue 17)
RANDOM_LABEL_SEED = 17  # the number: any fixed seed will do, this one is written down
RANDOM_TEST_SEED = 18
PERMUTATION_SEED = 17

# The offline ladder, from most to least information per image (roughly).
LADDER = (
    "mnist", "mnist-binary", "mnist-14", "mnist-7",
    *(f"mnist-k{k}" for k in range(2, 10)),
    "digits",
)


# --- the transforms (pure functions of arrays; tested directly) --------------------------------


def binarize(x: np.ndarray, threshold: int = BINARY_THRESHOLD) -> np.ndarray:
    """uint8 images -> 255 where pixel > threshold, else 0 (uint8, same shape)."""
    return np.where(x > threshold, np.uint8(255), np.uint8(0)).astype(np.uint8)


def area_downsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each `factor` x `factor` block of (N, C, H, W) uint8 images, rounded half up to uint8."""
    n, c, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not a multiple of {factor}")
    blocks = x.reshape(n, c, h // factor, factor, w // factor, factor).astype(np.uint32)
    area = factor * factor
    s = blocks.sum(axis=(3, 5))
    return ((s + area // 2) // area).astype(np.uint8)


def first_classes(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The examples with label < k, in their original order (copies)."""
    keep = y < k
    return np.ascontiguousarray(x[keep]), np.ascontiguousarray(y[keep])


def random_labels(n: int, seed: int = RANDOM_LABEL_SEED, n_classes: int = 10) -> np.ndarray:
    """n labels drawn uniformly from 0..n_classes-1, int64; the first m of them are `random_labels(m)`.

    numpy's legacy `RandomState`: its stream is frozen across numpy versions (NEP 19), unlike
    `Generator`'s, and the committed random-label studies depend on these exact labels.
    """
    return np.random.RandomState(seed).randint(0, n_classes, size=n).astype(np.int64)


def with_random_labels(x: np.ndarray, n: int, seed: int, n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` images of `x` (a copy) with `random_labels(n, seed)`; ValueError when x has fewer."""
    if len(x) < n:
        raise ValueError(f"{n} images wanted, {len(x)} there")
    return np.ascontiguousarray(x[:n]), random_labels(n, seed, n_classes)


def pixel_permutation(n_pixels: int, seed: int = PERMUTATION_SEED) -> np.ndarray:
    """A fixed permutation of 0..n_pixels-1 (legacy `RandomState`, frozen stream)."""
    return np.random.RandomState(seed).permutation(n_pixels)


def permute_pixels(x: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """(N, C, H, W) images with the H*W pixels of every channel reordered: out.flat[j] = x.flat[perm[j]]."""
    n, c, h, w = x.shape
    if sorted(perm.tolist()) != list(range(h * w)):
        raise ValueError(f"not a permutation of {h * w} pixels")
    return np.ascontiguousarray(x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w))


def random_label_name(n: int) -> str:
    return f"mnist-random-{n}"


def _digits_split(y: np.ndarray) -> np.ndarray:
    """Boolean mask of the held-out test examples: round(20%) of each class, seeded."""
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_test = int(round(DIGITS_TEST_FRACTION * len(idx)))
        test[rng.permutation(idx)[:n_test]] = True
    return test


def digits_arrays(train: bool) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as uint8 (N, 1, 8, 8) 0..255 and int64 labels; train or test part."""
    # Lazy: scikit-learn (with scipy) takes ~1 s to import and only this rung needs it.
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = d.target.astype(np.int64)
    test = _digits_split(y)
    keep = ~test if train else test
    return np.ascontiguousarray(x[keep]), np.ascontiguousarray(y[keep])


# --- registration --------------------------------------------------------------------------


def _mnist(roots: Roots, train: bool) -> tuple[np.ndarray, np.ndarray]:
    return load_arrays("mnist", roots, train)


def _binary_loader(roots: Roots, train: bool):
    x, y = _mnist(roots, train)
    return binarize(x), y.copy()


def _down_loader(factor: int):
    def load_arrays(roots: Roots, train: bool):
        x, y = _mnist(roots, train)
        return area_downsample(x, factor), y.copy()

    return load_arrays


def _k_loader(k: int):
    def load_arrays(roots: Roots, train: bool):
        x, y = _mnist(roots, train)
        return first_classes(x, y, k)

    return load_arrays


def _digits_loader(roots: Roots, train: bool):
    return digits_arrays(train)


def _random_loader(n: int):
    def load_arrays(roots: Roots, train: bool):
        x, _ = _mnist(roots, train)
        try:
            return with_random_labels(x, n, RANDOM_LABEL_SEED if train else RANDOM_TEST_SEED)
        except ValueError:
            part = "training" if train else "test"
            raise MincapError(f"{random_label_name(n)}: MNIST's {part} part has {len(x)} images, "
                              f"fewer than {n}") from None

    return load_arrays


def _permuted_loader(roots: Roots, train: bool):
    x, y = _mnist(roots, train)
    return permute_pixels(x, pixel_permutation(x.shape[2] * x.shape[3])), y.copy()


def _register() -> None:
    register(DatasetInfo("mnist-binary", 10, _binary_loader))
    register(DatasetInfo("mnist-14", 10, _down_loader(2)))
    register(DatasetInfo("mnist-7", 10, _down_loader(4)))
    for k in range(2, 10):
        register(DatasetInfo(f"mnist-k{k}", k, _k_loader(k)))
    register(DatasetInfo("digits", 10, _digits_loader))
    for n in RANDOM_SIZES:
        register(DatasetInfo(random_label_name(n), 10, _random_loader(n), memorize=n))
    register(DatasetInfo("mnist-permuted", 10, _permuted_loader))


_register()
