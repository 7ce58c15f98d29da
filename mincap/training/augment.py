"""Geometric augmentation as batched tensor ops: random affine and elastic distortion, one resample.

`augment(x, warp, gen)` distorts a batch of images (B, C, H, W) on whatever device it lives on:

- **affine**: each image is rotated by an angle uniform in [-rotate_deg, rotate_deg], scaled by a
  factor uniform in [1 - scale_frac, 1 + scale_frac], sheared horizontally by an angle uniform in
  [-shear_deg, shear_deg] and translated by (dx, dy), each uniform in [-translate_px, translate_px]
  pixels, about the image centre (content at centred pixel q lands at R·Sh·s·q + t);
- **elastic** (Simard, Steinkraus & Platt 2003): a displacement field with every component uniform
  in [-1, 1] per pixel, smoothed by a Gaussian of standard deviation `elastic_sigma` pixels
  (zero-padded, like the usual `gaussian_filter(..., mode="constant")` implementation; done as two
  small matmuls, `smoothing_matrix`) and scaled by `elastic_alpha` pixels (Simard's MNIST setting:
  alpha 34, sigma 4, displacements of about 1.3 px standard deviation).

Both become one sampling grid: `F.affine_grid` of the batch's affine matrices plus the elastic
displacement, read by a single bilinear `F.grid_sample` with zero fill (the background of every
mincap input, `prepare`'s pixels / 255). The random numbers come from a CPU `torch.Generator`
(`warp_generator(seed)`: derived from the run's seed, separate from the batch-order generator,
so turning a warp on keeps the batch order and shifts of the run without it; the draws are the
same on every device). Per batch: 5 uniforms per image for the affine part, drawn whenever any
warp is on, so each setting's draws do not depend on which others are on; then, with
`elastic_alpha > 0`, 2·H·W more per image.

The engine (`mincap.training.engine.train`) applies it after the integer shift (`augment_shift`)
and only when a setting is on: with every setting off no number is drawn and training is
byte-identical to the shift-only engine. `mincap.training.batched` draws each member's grid
from the member's own generator, as its solo run would, and resamples the group in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from mincap.config import AUGMENT_RANGES
from mincap.errors import MincapError

__all__ = ["Warp", "affine_matrices", "augment", "elastic_field", "gaussian_kernel", "resample",
           "sampling_grid", "smoothing_matrix", "warp_generator"]

_SEED_SALT = 0x5A17_D15C  # keeps the warp generator's stream apart from the batch-order generator's


@dataclass(frozen=True)
class Warp:
    """The geometric augmentation settings of one run (names and ranges as in `TrainConfig`)."""

    rotate_deg: float = 0.0
    scale_frac: float = 0.0
    shear_deg: float = 0.0
    translate_px: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0

    def __post_init__(self) -> None:
        for f in fields(self):
            lo, hi = AUGMENT_RANGES[f.name]
            v = getattr(self, f.name)
            if not lo <= v <= hi:
                raise MincapError(f"{f.name} must be within [{lo:g}, {hi:g}], got {v!r}")

    @classmethod
    def from_config(cls, cfg) -> Warp:
        """The warp of a `TrainConfig` (or anything with its fields)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    @property
    def affine(self) -> bool:
        return bool(self.rotate_deg or self.scale_frac or self.shear_deg or self.translate_px)

    @property
    def elastic(self) -> bool:
        return self.elastic_alpha > 0

    @property
    def active(self) -> bool:
        return self.affine or self.elastic


def warp_generator(seed: int) -> torch.Generator:
    """The CPU generator of a run's warps, derived from its seed (apart from its batch order's)."""
    return torch.Generator().manual_seed((int(seed) ^ _SEED_SALT) % (1 << 63))


def affine_matrices(warp: Warp, b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """`F.affine_grid` matrices (b, 2, 3), float64 on the CPU, in its normalized coordinates
    (align_corners=False): each maps an output position to the input position it samples, the
    inverse of the image's random forward transform. Draws 5 uniforms per image from `gen`."""
    u = torch.rand((b, 5), generator=gen, dtype=torch.float64) * 2 - 1
    rot = torch.deg2rad(u[:, 0] * warp.rotate_deg)
    s = 1 + u[:, 1] * warp.scale_frac
    shear = torch.tan(torch.deg2rad(u[:, 2] * warp.shear_deg))
    t = u[:, 3:5] * warp.translate_px  # (dx, dy) in pixels
    cos, sin = torch.cos(rot), torch.sin(rot)
    # forward = rotation @ shear @ scale (x right, y down, centred pixels); its inverse, written out
    fwd = torch.stack([torch.stack([cos, cos * shear - sin], -1),
                       torch.stack([sin, sin * shear + cos], -1)], -2)
    fwd = fwd * s[:, None, None]
    det = fwd[:, 0, 0] * fwd[:, 1, 1] - fwd[:, 0, 1] * fwd[:, 1, 0]
    inv = torch.stack([torch.stack([fwd[:, 1, 1], -fwd[:, 0, 1]], -1),
                       torch.stack([-fwd[:, 1, 0], fwd[:, 0, 0]], -1)], -2) / det[:, None, None]
    # pixels -> normalized: x_n = x * 2 / W about the centre, so the linear part is S inv S^-1
    sc = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)
    lin = inv * sc[None, :, None] / sc[None, None, :]
    shift = -(inv @ t[:, :, None])[:, :, 0] * sc[None, :]
    return torch.cat([lin, shift[:, :, None]], dim=2)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalized 1-d Gaussian of standard deviation `sigma` pixels (float64), truncated at
    4 sigma each side, as scipy's `gaussian_filter` does."""
    r = max(1, math.ceil(4 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    return k / k.sum()


def smoothing_matrix(sigma: float, size: int) -> torch.Tensor:
    """The (size, size) matrix G with G @ v = v convolved with `gaussian_kernel(sigma)`, zero-padded
    (a banded Toeplitz matrix): the blur as a matmul, ~12x faster than `conv2d` with a 33-tap
    kernel on one CPU thread (oneDNN is slow on one channel), and the same to float rounding."""
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    i = torch.arange(size)
    d = i[None, :] - i[:, None] + r  # G[i, j] = k[j - i + r] where |j - i| <= r
    inside = (d >= 0) & (d < len(k))
    return torch.where(inside, k[d.clamp(0, len(k) - 1)], torch.zeros((), dtype=k.dtype))


def elastic_field(warp: Warp, b: int, h: int, w: int, gen: torch.Generator,
                  device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Simard's displacement field (b, h, w, 2) as (dx, dy) in `F.grid_sample`'s normalized units:
    uniform [-1, 1] noise drawn on the CPU from `gen`, smoothed on `device` by a zero-padded
    Gaussian of `elastic_sigma` pixels (separably, `smoothing_matrix`), times `elastic_alpha` px."""
    noise = (torch.rand((b, 2, h, w), generator=gen) * 2 - 1).to(device=device, dtype=dtype)
    gy = smoothing_matrix(warp.elastic_sigma, h).to(device=device, dtype=dtype)
    gx = smoothing_matrix(warp.elastic_sigma, w).to(device=device, dtype=dtype)
    field = gy @ noise @ gx.T
    a = warp.elastic_alpha
    scale = torch.tensor([2.0 * a / w, 2.0 * a / h], device=device, dtype=dtype)
    return field.permute(0, 2, 3, 1) * scale


def sampling_grid(warp: Warp, b: int, h: int, w: int, gen: torch.Generator,
                  device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One batch's sampling grid (b, h, w, 2) for `F.grid_sample`: the affine part, then (with
    `elastic_alpha > 0`) the elastic displacement added to it."""
    theta = affine_matrices(warp, b, h, w, gen).to(device=device, dtype=dtype)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    if warp.elastic:
        grid = grid + elastic_field(warp, b, h, w, gen, device, dtype)
    return grid


def resample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of `x` (B, C, H, W) at `grid`, zero outside the image."""
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(x: torch.Tensor, warp: Warp, gen: torch.Generator) -> torch.Tensor:
    """`x` (B, C, H, W) warped by a random affine map and elastic field per image: one
    `grid_sample`, its random numbers from `gen` (`warp_generator(seed)` in the engine)."""
    b, _, h, w = x.shape
    return resample(x, sampling_grid(warp, b, h, w, gen, x.device, x.dtype))
