"""Quantization-aware training of weights and the integer codes the artifact stores.

What is quantized
    The weight tensors of every `nn.Conv2d` and `nn.Linear` (in model order), to
    an integer code per weight at 1..8 bits, chosen per layer:

    * symmetric, b >= 2: codes in [-(2^(b-1)-1), 2^(b-1)-1], weight = code * scale
      (zero is exactly representable, so magnitude-pruned weights are code 0);
    * symmetric, b = 1: codes in {-1, +1}, weight = code * scale, scale = mean |w|;
    * asymmetric: codes in [0, 2^b-1], weight = (code - zero_point) * scale with an
      integer zero point per scale.

    Scales are per output channel (`per_channel=True`) or one per layer, taken from
    the current float weights (max |w| / qmax; mean |w| for 1 bit) at every forward
    pass, so they follow training. Gradients pass straight through the rounding
    (STE: the fake-quantized weight is `w + (q(w) - w).detach()`).

What stays float
    Activations (float32 at inference, a fixed part of the decoder), scales and
    biases. After training, batch norm is folded into the preceding conv: with
    per-channel scales the codes do not change, only the channel's scale is
    multiplied by gamma / sqrt(var + eps) and the bias becomes
    beta - mean * gamma / sqrt(var + eps) (a negative gain flips the channel's codes).
    The artifact stores symmetric per-channel scales as 8-bit exponents of a float16
    base and biases as int8 multiples of a float16 step, other layers' scales and
    biases as float16, and counts every one of those bits (see `mincap.artifact`);
    the evaluated network is the one decoded from the artifact, so that rounding is
    included in every reported accuracy.

Training starts in float and switches to fake quantization for the last epochs
(`QuantState.enabled`, toggled by `mincap.compress` from `on_epoch_start`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mincap.errors import MincapError

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

__all__ = [
    "QuantSpec",
    "attach_fake_quant",
    "code_range",
    "detach_fake_quant",
    "quant_layers",
    "quantize_tensor",
    "set_fake_quant",
]


@dataclass(frozen=True)
class QuantSpec:
    """How one layer's weights are quantized."""

    bits: int
    per_channel: bool = True
    symmetric: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise MincapError(f"quant: bits must be 1..8, got {self.bits}")


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
    import torch.nn as nn

    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def quantize_tensor(w: torch.Tensor, q: QuantSpec):
    """Integer codes, scales and zero points of `w` (out channels on dim 0).

    Returns `(codes int64 like w, scale float32 (C,) or (1,), zero_point int64 (C,) or (1,))`
    with `w ~= (codes - zero_point) * scale` broadcast over dim 0.
    """
    import torch

    w = w.detach()
    flat = w.reshape(w.shape[0], -1) if q.per_channel else w.reshape(1, -1)
    lo, hi = code_range(q.bits, q.symmetric)
    tiny = torch.finfo(torch.float32).tiny
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
    import torch

    shape = (-1,) + (1,) * (codes.dim() - 1)
    c = codes.to(torch.float32)
    if zp.numel() > 1 or bool(zp.any()):
        c = c - zp.to(torch.float32).reshape(shape)
    return c * scale.to(torch.float32).reshape(shape)


def _fake_quant_cls():
    import torch.nn as nn

    class FakeQuant(nn.Module):
        """Parametrization: quantize-dequantize the weight when enabled, straight-through gradient."""

        def __init__(self, q: QuantSpec) -> None:
            super().__init__()
            self.q = q
            self.enabled = False

        def forward(self, w):
            if not self.enabled:
                return w
            codes, scale, zp = quantize_tensor(w, self.q)
            wq = dequantize(codes, scale, zp)
            return w + (wq - w).detach()

    return FakeQuant


def attach_fake_quant(model: nn.Module, specs: list[QuantSpec | None], *, enabled: bool = False) -> None:
    """Register a fake-quant parametrization on each layer's weight (None: stays float)."""
    from torch.nn.utils import parametrize

    layers = quant_layers(model)
    if len(specs) != len(layers):
        raise MincapError(f"quant: {len(specs)} bit widths for {len(layers)} conv/linear layers")
    FakeQuant = _fake_quant_cls()
    for layer, q in zip(layers, specs):
        if q is not None:
            fq = FakeQuant(q)
            fq.enabled = enabled
            parametrize.register_parametrization(layer, "weight", fq)


def set_fake_quant(model: nn.Module, enabled: bool) -> None:
    from torch.nn.utils import parametrize

    for layer in quant_layers(model):
        if parametrize.is_parametrized(layer, "weight"):
            for p in layer.parametrizations.weight:
                if hasattr(p, "q"):
                    p.enabled = enabled


def detach_fake_quant(model: nn.Module) -> list[QuantSpec | None]:
    """Remove all parametrizations (fake quant and masks), keeping the latent float weights.

    Returns the quantizer specs removed (None for float layers).
    """
    from torch.nn.utils import parametrize

    specs: list[QuantSpec | None] = []
    for layer in quant_layers(model):
        if parametrize.is_parametrized(layer, "weight"):
            qs = [p.q for p in layer.parametrizations.weight if hasattr(p, "q")]
            specs.append(qs[0] if qs else None)
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        else:
            specs.append(None)
    return specs


def latent_weight(layer: nn.Module):
    """The float weight under any fake-quant parametrization."""
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def _mask_cls():
    import torch.nn as nn

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
    from torch.nn.utils import parametrize

    Mask = _mask_cls()
    for layer in quant_layers(model):
        w = latent_weight(layer).detach()
        k = int(round(sparsity * w.numel()))
        if k <= 0:
            continue
        thresh = w.abs().reshape(-1).kthvalue(k).values
        mask = (w.abs() > thresh).to(w.dtype)
        parametrize.register_parametrization(layer, "weight", Mask(mask))
