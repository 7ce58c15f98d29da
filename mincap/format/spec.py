"""The binary spec of a `.mincap` file (the architecture) and the layer shapes it implies."""

from __future__ import annotations

from dataclasses import replace

from mincap.errors import MincapError
from mincap.format.bits import Reader, varint
from mincap.nets.models import ACTIVATIONS, Conv, Spec

__all__ = ["layer_shapes", "read_spec", "SEPARABLE", "spec_bytes"]

SEPARABLE = 1 << 6  # spec flag (format version 2): a varint bitmask of the separable conv blocks follows


def spec_bytes(spec: Spec) -> bytes:
    """The binary spec (batch norm folded): flags, conv blocks, hidden widths, shape unless MNIST's."""
    if spec.batch_norm:
        raise ValueError("artifact: fold batch norm before encoding")
    default_shape = tuple(spec.in_shape) == (1, 28, 28) and spec.n_classes == 10
    separable = sum(1 << i for i, c in enumerate(spec.convs) if c.separable)
    flags = (
        (spec.family == "mlp")
        | (spec.head == "gap") << 1
        | ACTIVATIONS.index(spec.activation) << 2
        | default_shape << 5
        | (SEPARABLE if separable else 0)
    )
    out = bytearray([flags])
    out += varint(len(spec.convs))
    for c in spec.convs:
        if max(c.kernel, c.pad, c.stride, c.pool) > 15:
            raise ValueError("artifact: conv kernel/pad/stride/pool must be < 16")
        out += varint(c.channels) + bytes([c.kernel << 4 | c.pad, c.stride << 4 | c.pool])
    if separable:
        out += varint(separable)
    out += varint(len(spec.hidden))
    for h in spec.hidden:
        out += varint(h)
    if not default_shape:
        for v in (*spec.in_shape, spec.n_classes):
            out += varint(v)
    return bytes(out)


def read_spec(r: Reader, version: int) -> Spec:
    flags = r.byte()
    act = (flags >> 2) & 7
    if act >= len(ACTIVATIONS) or flags >> 7 or (flags & SEPARABLE and version < 2):
        raise MincapError("artifact: corrupt spec")
    convs = []
    for _ in range(r.varint()):
        ch = r.varint()
        kp, sp = r.byte(), r.byte()
        convs.append(Conv(ch, kp >> 4, sp >> 4, sp & 15, kp & 15))
    if flags & SEPARABLE:
        mask = r.varint()
        if mask >> len(convs) or not mask:
            raise MincapError("artifact: corrupt spec")
        convs = [replace(c, separable=bool(mask >> i & 1)) for i, c in enumerate(convs)]
    hidden = tuple(r.varint() for _ in range(r.varint()))
    if flags >> 5 & 1:
        in_shape, n_classes = (1, 28, 28), 10
    else:
        c, h, w, n_classes = (r.varint() for _ in range(4))
        in_shape = (c, h, w)
    return Spec(
        family="mlp" if flags & 1 else "cnn",
        convs=tuple(convs),
        hidden=hidden,
        activation=ACTIVATIONS[act],
        batch_norm=False,
        head="gap" if flags >> 1 & 1 else "flatten",
        in_shape=in_shape,
        n_classes=n_classes,
    )


def layer_shapes(spec: Spec) -> list[tuple[tuple[int, ...], int]]:
    """(weight shape, out channels) of each conv/linear layer of `spec`, in order."""
    shapes = []
    c = spec.in_shape[0]
    for cv in spec.convs:
        if cv.separable:  # depthwise, then pointwise (`mincap.nets.models.build`)
            shapes.append(((c, 1, cv.kernel, cv.kernel), c))
            shapes.append(((cv.channels, c, 1, 1), cv.channels))
        else:
            shapes.append(((cv.channels, c, cv.kernel, cv.kernel), cv.channels))
        c = cv.channels
    if spec.head == "gap":
        width = spec.feature_shape()[0]
    else:
        fc, fh, fw = spec.feature_shape()
        width = fc * fh * fw
    for h in (*spec.hidden, spec.n_classes):
        shapes.append(((h, width), h))
        width = h
    return shapes
