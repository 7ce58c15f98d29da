"""The closed-form estimators: `asker`, `pixels`, `labels`, and the `compressed` upper bound.

Each takes plain numpy arrays (images uint8 (N, C, H, W) or (N, D), labels int (N,))
and returns bits, so tests can feed them synthetic data; `mincap.entropy.estimators.estimate`
loads a dataset, wraps these and caches the result.

Binarization (for `asker` and `pixels`): a pixel is 1 when its value is > `threshold`
(uint8 units, 0..254). The default, 0, means "any ink": it is the reading of the
learner's steps that reproduces their 191 bits on MNIST (see `asker_bits`).
"""

from __future__ import annotations

import io
import lzma
import math

import numpy as np
import zstandard
from PIL import Image

from mincap.entropy.base import COMPRESSORS, DEFAULT_THRESHOLD
from mincap.errors import MincapError

__all__ = [
    "COMPRESSORS",
    "DEFAULT_THRESHOLD",
    "asker_bits",
    "binary_entropy",
    "compressed_sizes",
    "label_bits",
    "pixel_frequencies",
    "pixels_bits",
    "uniform_bits",
]



def _images(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise MincapError(f"entropy: expected a non-empty batch of images, got shape {x.shape}")
    if x.dtype != np.uint8:
        raise MincapError(f"entropy: images must be uint8 (0..255), got {x.dtype}")
    return x.reshape(x.shape[0], -1)


def _check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, (int, float)) and 0 <= threshold < 255):
        raise MincapError(f"--threshold must be in [0, 255) (a pixel is 1 when > threshold), got {threshold}")
    return float(threshold)


def pixel_frequencies(x: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """p_i: the fraction of images whose pixel i is > `threshold`, as float64 of length D."""
    flat = _images(x)
    t = _check_threshold(threshold)
    counts = np.zeros(flat.shape[1], dtype=np.int64)
    for i in range(0, flat.shape[0], 8192):  # bounded memory on big sets
        counts += (flat[i : i + 8192] > t).sum(0)
    return counts / flat.shape[0]


def _plogp(p: np.ndarray) -> np.ndarray:
    """p log2 p with 0 log 0 = 0."""
    out = np.zeros_like(p, dtype=np.float64)
    nz = p > 0
    out[nz] = p[nz] * np.log2(p[nz])
    return out


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H2(p) = -p log2 p - (1-p) log2 (1-p) in bits, elementwise."""
    p = np.asarray(p, dtype=np.float64)
    return -(_plogp(p) + _plogp(1.0 - p))


def asker_bits(x: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> float:
    """The learner's figure, read literally: -Σ_i p_i log2 p_i over the pixel-on frequencies.

    Steps: binarize every training image (pixel > `threshold`), count how often
    each pixel is 1, divide by the number of images ("an estimate of the true
    probability distribution"), and apply the entropy formula -Σ p log2 p to
    those 784 numbers. On MNIST's 60,000 training images with threshold 0 this
    gives 190.79 bits, the learner's 191. Other readings do not: threshold 127
    (>=128) gives 178.31, the sum of binary entropies (`pixels_bits`) 342.41,
    and the entropy of the histogram renormalized to sum to 1 is 8.50 (it can
    never exceed log2 784 = 9.61).

    What it is not: the p_i are 784 *marginal* probabilities that do not sum to
    one, so Σ -p_i log2 p_i is not the entropy of any distribution over images:
    it drops the "pixel off" term of each pixel's binary entropy (so it is not
    even the independent-pixel entropy, which it underestimates), and it ignores
    the dependence between pixels (strokes, digit shapes), which is what makes
    the true entropy of the image distribution far smaller than any per-pixel
    sum. Nor does it say anything about the labels: the bits needed to encode a
    labeling are bounded by `labels` and `prequential`, not by pixel statistics.
    """
    return float(-_plogp(pixel_frequencies(x, threshold)).sum())


def pixels_bits(x: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Σ_i H2(p_i) in bits per image: the binarized images' entropy if pixels were independent.

    For any distribution over binary images, the joint entropy is at most the sum
    of its pixels' marginal entropies, so this is an upper bound on the entropy
    (per image) of the binarized image distribution, with the p_i estimated
    from the data (times N: the ideal code length of the binarized set under
    the fitted independent-pixel model, model cost not counted).
    """
    return float(binary_entropy(pixel_frequencies(x, threshold)).sum())


def label_bits(y: np.ndarray, n_classes: int) -> float:
    """H(Y) in bits per example, from the empirical label frequencies.

    Times N it is (to within the few bits needed to send the counts) the cost
    of sending the training labels with no model and no look at the images;
    it is at most log2(n_classes).
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise MincapError(f"entropy: expected a non-empty 1-D label array, got shape {y.shape}")
    if n_classes < 1 or y.min() < 0 or y.max() >= n_classes:
        raise MincapError(f"entropy: labels must be in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    q = np.bincount(y.astype(np.int64), minlength=n_classes) / y.size
    return float(-_plogp(q).sum())


def _png_size(flat: np.ndarray, shape: tuple[int, ...]) -> int:
    """Bytes of the images stacked vertically into one 8-bit grayscale PNG (PIL, optimize=True)."""
    # single-channel images keep their width; anything else becomes one row of D pixels each
    w = shape[2] if len(shape) == 3 and shape[0] == 1 else flat.shape[1]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(flat.reshape(-1, w)), mode="L").save(buf, "PNG", optimize=True)
    return buf.tell()


def compressed_sizes(
    x: np.ndarray, compressors: tuple[str, ...] = COMPRESSORS, on_start=None
) -> dict[str, int]:
    """Size in bytes of the raw uint8 image bytes after each compressor, in their given order.

    lzma: xz format, preset 9 | PRESET_EXTREME; zstd: level 22 (zstandard);
    png: all images stacked into one grayscale PNG, zlib level 9 with PIL's
    optimize. Any of these sizes (times 8, plus the fixed size of the
    decompressor) is an upper bound on the information in the images as they
    are, 8-bit; the labels are not included. `on_start(name)` is called before
    each compressor runs (for a status line).
    """
    flat = _images(x)
    shape = tuple(np.asarray(x).shape[1:])
    raw = np.ascontiguousarray(flat).tobytes()
    sizes: dict[str, int] = {}
    for name in compressors:
        if on_start is not None:
            on_start(name)
        if name == "lzma":
            sizes[name] = len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
        elif name == "zstd":
            sizes[name] = len(zstandard.ZstdCompressor(level=22).compress(raw))
        elif name == "png":
            sizes[name] = _png_size(flat, shape)
        else:
            raise MincapError(f"entropy: unknown compressor {name!r}; known: {', '.join(COMPRESSORS)}")
    return sizes


def uniform_bits(n: int, n_classes: int) -> float:
    """n log2 K: the labels sent at the uniform code."""
    return n * math.log2(n_classes)
