"""The writer half of the `.mincap` format: a trained (fake-quantized) network to file bytes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn

from mincap.format.codes import LayerCodes
from mincap.format.container import decode, encode
from mincap.format.side import CompactSide
from mincap.nets.models import Spec, is_depthwise, pruned_spec
from mincap.nets.quant import QuantSpec, quant_layers, quantize_tensor, quantizer_of, set_fake_quant

__all__ = ["export", "reexport"]


def export(model: nn.Module, spec: Spec, side_bits: int = 8) -> bytes:
    """The `.mincap` bytes of a trained `model` (fake quantizers attached or not; BN folded here).

    `side_bits`: the width of the symmetric layers' biases and scale exponents (8: 1.1% scale
    steps and int8 biases; fewer: format version 5, see `CompactSide.from_float`)."""
    spec = pruned_spec(model, spec)
    set_fake_quant(model, False)  # layer.weight is now the (masked) latent weight
    model.eval()
    mods = list(model.features) + list(model.classifier)
    layers = []
    carry = None  # a depthwise conv's bias, moved into the pointwise conv after it
    with torch.no_grad():
        for layer in quant_layers(model):
            fq = quantizer_of(layer)
            q = None if fq is None else QuantSpec(fq.bits, fq.q.per_channel, fq.q.symmetric, fq.q.method)
            learned = fq.scale(layer.weight.detach()).float().cpu() if q is not None and q.method == "lsq" else None
            w = layer.weight.detach().float().cpu()
            n_out = w.shape[0]
            bias = layer.bias.detach().float().cpu() if layer.bias is not None else torch.zeros(n_out)
            idx = mods.index(layer)
            nxt = mods[idx + 1] if idx + 1 < len(mods) else None
            fold = (q is not None and q.symmetric and is_depthwise(layer) and isinstance(nxt, nn.Conv2d)
                    and nxt.kernel_size == (1, 1) and layer.bias is not None)
            if fold:  # a depthwise conv before a 1x1 conv: its bias moves there (format version 3)
                bias = torch.zeros(n_out)
            gain = torch.ones(n_out)
            if isinstance(nxt, nn.BatchNorm2d):
                gain = (nxt.weight / torch.sqrt(nxt.running_var + nxt.eps)).detach().float().cpu()
                bias = nxt.bias.detach().float().cpu() + (bias - nxt.running_mean.detach().float().cpu()) * gain
            lay = _layer_codes(w, q, learned, gain, bias, side_bits)
            if carry is not None:
                # The depthwise bias is a constant added to each input channel at every position
                # (padded or not), so through this 1x1 conv (and its batch norm) it is W @ b more
                # bias, with W the weight as decoded: the decoded function is the unfolded one's.
                w_dec = torch.from_numpy(lay.float_weight()).reshape(n_out, -1)
                lay = _layer_codes(w, q, learned, gain, bias + w_dec @ carry, side_bits)
            carry = layer.bias.detach().float().cpu() if fold else None
            layers.append(lay)
    set_fake_quant(model, True)
    return encode(replace(spec, batch_norm=False, dropout=0.0), layers)


def _layer_codes(w: torch.Tensor, q: QuantSpec | None, learned, gain: torch.Tensor, bias: torch.Tensor,
                 side_bits: int = 8) -> LayerCodes:
    """One layer as stored: `w` quantized by `q` (None: float32), batch norm's `gain` folded in."""
    n_out = w.shape[0]
    shape = (-1,) + (1,) * (w.dim() - 1)
    if q is None:
        return LayerCodes(0, weight=(w * gain.reshape(shape)).numpy(), bias=bias.numpy())
    codes, scale, zp = quantize_tensor(w, q, learned)
    per_channel = q.per_channel or bool((gain != 1).any())
    if per_channel:
        scale, zp = scale.expand(n_out) * gain, zp.expand(n_out)
    if q.symmetric:  # 8-bit scales/biases (one float16 scale per layer: version 3); a negative gain flips codes
        sign = torch.where(scale < 0, -1, 1).reshape(shape if per_channel else ())
        side = CompactSide.from_float(scale.reshape(-1).abs().numpy(), bias.numpy(), side_bits)
        return LayerCodes(q.bits, codes=(codes * sign).numpy(), side=side, per_channel=per_channel)
    return LayerCodes(
        q.bits, codes=codes.numpy(), scale=scale.numpy().astype(np.float16),
        zero_point=zp.numpy().astype(np.uint8), bias=bias.numpy().astype(np.float16),
        per_channel=per_channel, symmetric=q.symmetric,
    )


def reexport(data: bytes, side_bits: int) -> bytes:
    """A `.mincap` file's network re-encoded with its side information at `side_bits`.

    The codes are kept; each symmetric layer's scales and biases are rounded again, from their
    decoded values, to `side_bits` (the decoded network changes by that rounding only: evaluate
    it again before using the file). Other layers are kept as they are."""
    dec = decode(data)
    layers = []
    for lay in dec.layers:
        if lay.bits and lay.compact:
            lay = replace(lay, side=CompactSide.from_float(lay.side.scale(), lay.side.bias(), side_bits), stats={})
        layers.append(lay)
    return encode(dec.spec, layers)
