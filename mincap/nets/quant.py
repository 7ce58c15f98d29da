"""Quantization-aware training of weights and the integer codes the artifact stores.

What is quantized
    The weight tensors of every `nn.Conv2d` and `nn.Linear` (in model order), to
    an integer code per weight at 1..8 bits, chosen per layer:

    * symmetric, b >= 2: codes in [-(2^(b-1)-1), 2^(b-1)-1], weight = code * scale
      (zero is exactly representable, so magnitude-pruned weights are code 0);
    * symmetric, b = 1: codes in {-1, +1}, weight = code * scale, scale = mean |w|;
    * asymmetric: codes in [0, 2^b-1], weight = (code - zero_point) * scale with an
      integer zero point per scale.

    Scales are per output channel (`per_channel=True`) or one per layer. How they are
    chosen is the spec's `method`:

    * `max` (the original rule, and what `mincap.training.batched` reproduces): max |w| / qmax
      (mean |w| for 1 bit) from the current float weights at every forward pass.
      At 2 bits this puts the ternary threshold at max|w| / 2, so most weights
      become 0: the collapse issue 14 measured at the QAT switch.
    * `mse`: the per-channel scale that minimizes the squared quantization error
      (a grid search over clipping points, `mse_scale`), at every forward pass.
    * `lsq`: learned step size (Esser et al. 2020, "Learned Step Size
      Quantization"): the scale is a parameter trained with the weights, initialized
      MSE-optimally at the switch; its gradient is scaled by g = 1/sqrt(n * qmax)
      as in the paper. It is stored as log(scale) because the optimizer is Adam: an
      Adam step has the size of the learning rate whatever the gradient's scale, so
      in the log domain a step changes the scale by ~lr relatively instead of by lr
      absolutely (0.01 would be 10-50% of a typical 3-bit step).

    For `mse` and `lsq` a 2-bit symmetric layer is ternary {-1, 0, +1} * scale with
    threshold scale / 2, both optimal/learned (not max|w|-derived); 1 bit is
    {-1, +1} * scale. Gradients pass straight through the rounding (STE); with
    `lsq`, weights beyond the clipping point get no gradient (the paper's rule).

    The width can be annealed (`set_fake_quant_bits`): QAT may start at 8 bits and
    step down to the layer's target, re-initializing learned steps at each change.

What stays float
    Activations (float32 at inference, a fixed part of the decoder), scales and
    biases. After training, batch norm is folded into the preceding conv: with
    per-channel scales the codes do not change, only the channel's scale is
    multiplied by gamma / sqrt(var + eps) and the bias becomes
    beta - mean * gamma / sqrt(var + eps) (a negative gain flips the channel's codes).
    The artifact stores symmetric per-channel scales as 8-bit exponents of a float16
    base and biases as int8 multiples of a float16 step, other layers' scales and
    biases as float16, and counts every one of those bits (see `mincap.format.container`);
    the evaluated network is the one decoded from the artifact, so that rounding is
    included in every reported accuracy.

Training starts in float and switches to fake quantization for the last epochs
(`QuantState.enabled`, toggled by `mincap.compression.qat` from `on_epoch_start`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from mincap.config import QUANTIZERS
from mincap.errors import MincapError

__all__ = [
    "METHODS",
    "QuantSpec",
    "attach_fake_quant",
    "code_range",
    "detach_fake_quant",
    "detach_quantizers",
    "layer_scale",
    "mse_scale",
    "quant_layers",
    "quantize_tensor",
    "quantizer_of",
    "set_fake_quant",
    "set_fake_quant_bits",
]

METHODS = QUANTIZERS  # the names live in mincap.config, which the CLI reads without torch


@dataclass(frozen=True)
class QuantSpec:
    """How one layer's weights are quantized."""

    bits: int
    per_channel: bool = True
    symmetric: bool = True
    method: str = "max"  # max, mse or lsq (see the module docstring)

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise MincapError(f"quant: bits must be 1..8, got {self.bits}")
        if self.method not in METHODS:
            raise MincapError(f"quant: method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method != "max" and not self.symmetric:
            raise MincapError(f"quant: the {self.method} quantizer is symmetric only")


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Smallest and largest integer code of a `bits`-wide quantizer."""
    if symmetric:
        if bits == 1:
            return -1, 1
        q = 2 ** (bits - 1) - 1
        return -q, q
    return 0, 2**bits - 1


def quant_layers(model: nn.Module) -> list[nn.Module]:
    """The conv and linear layers of `model`, in order (the layers the artifact stores)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def mse_scale(w: torch.Tensor, bits: int, per_channel: bool = True, n_grid: int = 64):
    """The symmetric scale per output channel (or one) minimizing sum (q(w) - w)^2.

    A grid search over clipping points c = max|w| * k / n_grid (scale c / qmax); 1 bit:
    mean |w|, the closed-form optimum of {-1, +1} * scale.
    """
    w = w.detach()
    flat = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    tiny = torch.finfo(torch.float32).tiny * 1e6
    if bits == 1:
        return flat.abs().mean(dim=1).clamp_min(tiny)
    hi = 2 ** (bits - 1) - 1
    amax = flat.abs().amax(dim=1).clamp_min(tiny)
    frac = torch.arange(1, n_grid + 1, dtype=flat.dtype, device=flat.device) / n_grid
    scales = amax[None, :] * frac[:, None] / hi  # (K, C)
    q = torch.round(flat[None] / scales[:, :, None]).clamp(-hi, hi) * scales[:, :, None]
    err = (q - flat[None]).pow(2).sum(dim=2)  # (K, C)
    return scales.gather(0, err.argmin(dim=0, keepdim=True))[0]


def quantize_tensor(w: torch.Tensor, q: QuantSpec, scale: torch.Tensor | None = None):
    """Integer codes, scales and zero points of `w` (out channels on dim 0).

    Returns `(codes int64 like w, scale float32 (C,) or (1,), zero_point int64 (C,) or (1,))`
    with `w ~= (codes - zero_point) * scale` broadcast over dim 0. `scale` (symmetric
    only) fixes the scales, e.g. an `lsq` layer's learned ones; otherwise they follow
    `q.method` (`max`: max |w| / qmax, `mse`/`lsq`: `mse_scale`).
    """
    w = w.detach()
    flat = w.reshape(w.shape[0], -1) if q.per_channel else w.reshape(1, -1)
    lo, hi = code_range(q.bits, q.symmetric)
    tiny = torch.finfo(torch.float32).tiny
    if q.symmetric and (scale is not None or q.method != "max"):
        scale = mse_scale(w, q.bits, q.per_channel) if scale is None else scale.detach().reshape(-1).float()
        scale = scale.clamp_min(tiny * 1e6)
        if q.bits == 1:
            codes = torch.where(flat >= 0, 1.0, -1.0).expand_as(flat)
        else:
            codes = torch.round(flat / scale[:, None]).clamp(lo, hi)
        zp = torch.zeros_like(scale, dtype=torch.int64)
        return codes.to(torch.int64).reshape(w.shape), scale.float(), zp
    if q.symmetric:
        if q.bits == 1:
            scale = flat.abs().mean(dim=1)
        else:
            scale = flat.abs().amax(dim=1) / hi
        scale = scale.clamp_min(tiny * 1e6)
        zp = torch.zeros_like(scale, dtype=torch.int64)
        codes = torch.round(flat / scale[:, None])
        if q.bits == 1:
            codes = torch.where(flat >= 0, 1.0, -1.0)
        codes = codes.clamp(lo, hi)
    else:
        wmin = flat.amin(dim=1).clamp(max=0.0)
        wmax = flat.amax(dim=1).clamp(min=0.0)
        scale = ((wmax - wmin) / (hi - lo)).clamp_min(tiny * 1e6)
        zp = torch.round(-wmin / scale).clamp(lo, hi).to(torch.int64)
        codes = (torch.round(flat / scale[:, None]) + zp[:, None]).clamp(lo, hi)
    return codes.to(torch.int64).reshape(w.shape), scale.float(), zp


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor):
    """float32 weights from codes; `scale`/`zp` have one entry per row of dim 0, or one in all."""
    shape = (-1,) + (1,) * (codes.dim() - 1)
    c = codes.to(torch.float32)
    if zp.numel() > 1 or bool(zp.any()):
        c = c - zp.to(torch.float32).reshape(shape)
    return c * scale.to(torch.float32).reshape(shape)


def _fake_quant_cls():
    class FakeQuant(nn.Module):
        """Parametrization: quantize-dequantize the weight when enabled, straight-through gradient.

        `bits` is the width in use now (annealing may hold it above `q.bits` for a while);
        `log_step` (lsq only) holds log(scale), one per output channel or one.
        """

        def __init__(self, q: QuantSpec, n_scales: int, n_per_scale: int) -> None:
            super().__init__()
            self.q = q
            self.enabled = False
            self.bits = q.bits
            self.n_per_scale = n_per_scale
            self.initialized = False
            if q.method == "lsq":
                self.log_step = nn.Parameter(torch.zeros(n_scales))

        def init_step(self, w) -> None:
            """MSE-optimal start for the learned step at the current width."""
            with torch.no_grad():
                self.log_step.copy_(mse_scale(w, self.bits, self.q.per_channel).log())
            self.initialized = True

        def scale(self, w):
            """The scales in use now, (C,) or (1,), detached."""
            if self.q.method == "lsq":
                if not self.initialized:
                    self.init_step(w)
                return self.log_step.detach().exp()
            spec = QuantSpec(self.bits, self.q.per_channel, self.q.symmetric, self.q.method)
            return quantize_tensor(w, spec)[1]

        def forward(self, w):
            if not self.enabled:
                return w
            if self.q.method != "lsq":
                spec = QuantSpec(self.bits, self.q.per_channel, self.q.symmetric, self.q.method)
                codes, scale, zp = quantize_tensor(w, spec)
                wq = dequantize(codes, scale, zp)
                return w + (wq - w).detach()
            if not self.initialized:
                self.init_step(w)
            lo, hi = code_range(self.bits, True)
            g = 1.0 / (self.n_per_scale * hi) ** 0.5
            t = self.log_step * g + (self.log_step * (1 - g)).detach()  # value log_step, gradient * g
            s = t.exp().reshape((-1,) + (1,) * (w.dim() - 1))
            v = (w / s).clamp(lo, hi)
            if self.bits == 1:
                r = torch.where(v >= 0, 1.0, -1.0)
            else:
                r = torch.round(v)
            return (v + (r - v).detach()) * s

    return FakeQuant


def attach_fake_quant(model: nn.Module, specs: list, *, enabled: bool = False) -> None:
    """Register a fake-quant parametrization on each layer's weight (None: stays float).

    An entry may be a `QuantSpec` (a new quantizer) or a quantizer module taken off
    earlier by `detach_quantizers` (put back with its learned steps; re-initialized
    when the layer's output channels changed, e.g. by pruning).
    """
    layers = quant_layers(model)
    if len(specs) != len(layers):
        raise MincapError(f"quant: {len(specs)} bit widths for {len(layers)} conv/linear layers")
    FakeQuant = _fake_quant_cls()
    for layer, q in zip(layers, specs):
        if q is None:
            continue
        w = layer.weight
        n_scales = w.shape[0] if _q_of(q).per_channel else 1
        n_per_scale = w.numel() // n_scales
        if isinstance(q, QuantSpec):
            fq = FakeQuant(q, n_scales, n_per_scale).to(w.device)
        else:
            fq = q
            fq.n_per_scale = n_per_scale
            if fq.q.method == "lsq" and fq.log_step.numel() != n_scales:
                fq.log_step = torch.nn.Parameter(torch.zeros(n_scales, device=w.device))
                fq.initialized = False
        fq.enabled = enabled
        parametrize.register_parametrization(layer, "weight", fq)


def _q_of(entry) -> QuantSpec:
    """The `QuantSpec` of a spec or of a quantizer module."""
    return entry if isinstance(entry, QuantSpec) else entry.q


def quantizer_of(layer):
    if parametrize.is_parametrized(layer, "weight"):
        for p in layer.parametrizations.weight:
            if hasattr(p, "q"):
                return p
    return None


def set_fake_quant(model: nn.Module, enabled: bool) -> None:
    for layer in quant_layers(model):
        fq = quantizer_of(layer)
        if fq is not None:
            fq.enabled = enabled


def set_fake_quant_bits(model: nn.Module, bits_of) -> None:
    """Set each quantizer's width now to `bits_of(q)` (>= its target; annealing).

    A learned step is re-initialized (MSE-optimal) when its width changes.
    """
    for layer in quant_layers(model):
        fq = quantizer_of(layer)
        if fq is None:
            continue
        b = max(fq.q.bits, min(8, int(bits_of(fq.q))))
        if b != fq.bits:
            fq.bits = b
            fq.initialized = False


def layer_scale(layer):
    """The scales (C,) or (1,) the layer's quantizer uses now on its latent weight (None: float)."""
    fq = quantizer_of(layer)
    return None if fq is None else fq.scale(latent_weight(layer).detach())


def detach_quantizers(model: nn.Module) -> list:
    """Remove all parametrizations (fake quant and masks), keeping the latent float weights.

    Returns the quantizer modules removed (None for float layers), learned steps
    included, for `attach_fake_quant` to put back. Sparsity masks are baked into the
    latent weights (masked weights stay exactly 0).
    """
    out = []
    for layer in quant_layers(model):
        fq = quantizer_of(layer)
        out.append(fq)
        if parametrize.is_parametrized(layer, "weight"):
            with torch.no_grad():  # masked weights become 0 in the latent weight, so a later mask keeps them out
                for p in layer.parametrizations.weight:
                    if hasattr(p, "mask"):
                        layer.parametrizations.weight.original.mul_(p.mask)
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    return out


def detach_fake_quant(model: nn.Module) -> list[QuantSpec | None]:
    """Remove all parametrizations (fake quant and masks), keeping the latent float weights.

    Returns the quantizer specs removed (None for float layers).
    """
    return [None if fq is None else fq.q for fq in detach_quantizers(model)]


def latent_weight(layer: nn.Module):
    """The float weight under any fake-quant parametrization."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def _mask_cls():
    class Mask(nn.Module):
        """Parametrization: unstructured sparsity, `w * mask` (mask fixed, stored as a buffer)."""

        def __init__(self, mask) -> None:
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, w):
            return w * self.mask

    return Mask


def attach_sparsity(model: nn.Module, sparsity: float) -> None:
    """Zero the `sparsity` fraction of smallest-magnitude weights of each conv/linear layer, and keep them zero.

    Must be attached before the fake quantizer (parametrizations apply in registration
    order); a pruned weight quantizes to the code of 0.0 and the file pays for it.
    """
    Mask = _mask_cls()
    for layer in quant_layers(model):
        w = latent_weight(layer).detach()
        k = int(round(sparsity * w.numel()))
        if k <= 0:
            continue
        thresh = w.abs().reshape(-1).kthvalue(k).values
        mask = (w.abs() > thresh).to(w.dtype)
        parametrize.register_parametrization(layer, "weight", Mask(mask))
