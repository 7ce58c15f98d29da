"""Network architectures as compact, serializable specs, and named presets.

A `Spec` is a frozen dataclass that round-trips through a short JSON string
(`spec.to_json()` / `Spec.from_json()`), so a study can store it, the artifact
can carry it, and a user can type it on the command line. `build(spec)` turns it
into an `nn.Module` whose layers are plain `nn.Conv2d` / `nn.Linear` /
`nn.BatchNorm2d` inside two `nn.Sequential`s, which torch-pruning's dependency
graph and the quantizer walk without special cases.

A CNN block is conv -> [batch norm] -> activation -> [max pool]; the head is a
flatten or a global average pool, then fully connected layers. Inputs are the
uint8 pixels divided by 255 (`prepare`), a fixed part of the decoder, so no
dataset statistics hide outside the counted bits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import torch.nn as nn

from mincap.errors import MincapError

__all__ = ["ACTIVATIONS", "PRESETS", "Conv", "Spec", "build", "count_params", "is_depthwise", "parse_arch", "prepare", "pruned_spec"]

ACTIVATIONS = ("relu", "relu6", "leaky_relu", "gelu", "silu", "tanh", "hardtanh")
FAMILIES = ("mlp", "cnn")
HEADS = ("flatten", "gap")


@dataclass(frozen=True)
class Conv:
    """One conv block: `channels` out, square `kernel`, `stride`, zero `pad`, then `pool`x`pool` max pool (1 = none).

    `separable`: a depthwise `kernel`x`kernel` conv (one filter per input channel, with a
    bias) followed by a 1x1 pointwise conv to `channels` -- k*k*c_in + c_in*c_out weights
    instead of k*k*c_in*c_out (MobileNet's block; the 697-parameter 99% MNIST nets use it).
    """

    channels: int
    kernel: int = 3
    stride: int = 1
    pool: int = 1
    pad: int = 0
    separable: bool = False

    def as_list(self) -> list[int]:
        """The JSON form: five numbers, a sixth (1) only for a separable block."""
        return [self.channels, self.kernel, self.stride, self.pool, self.pad] + ([1] if self.separable else [])


CONV_FIELDS = ("channels", "kernel", "stride", "pool", "pad")  # then an optional `separable` (0 or 1)


def _whole(what: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise MincapError(f"spec: {what} must be whole numbers, got {v!r}")
    return v


def _conv(i: int, c) -> Conv:
    """A conv block from a `Conv` or its JSON form: the five `CONV_FIELDS`, then optionally 0/1 for separable."""
    if isinstance(c, Conv):
        return c
    if not isinstance(c, (list, tuple)) or len(c) not in (len(CONV_FIELDS), len(CONV_FIELDS) + 1):
        raise MincapError(f"spec: conv {i} must be [{', '.join(CONV_FIELDS)}] or with a sixth 0/1 for "
                          f"separable, got {c!r}")
    nums = [_whole(f"conv {i} {name}", v) for name, v in zip((*CONV_FIELDS, "separable"), c)]
    if len(nums) > len(CONV_FIELDS) and nums[-1] not in (0, 1):
        raise MincapError(f"spec: conv {i} separable must be 0 or 1, got {nums[-1]}")
    return Conv(*nums[:len(CONV_FIELDS)], separable=bool(nums[len(CONV_FIELDS):] == [1]))


@dataclass(frozen=True)
class Spec:
    """A network, fully described. Serialize with `to_json`; build with `build`."""

    family: str = "cnn"
    convs: tuple[Conv, ...] = ()
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    batch_norm: bool = False
    head: str = "flatten"
    dropout: float = 0.0
    in_shape: tuple[int, int, int] = (1, 28, 28)
    n_classes: int = 10

    def __post_init__(self) -> None:
        # Normalize lists from JSON into tuples so specs hash and compare by value; anything but
        # whole numbers where whole numbers belong is refused here, in one line.
        object.__setattr__(self, "convs", tuple(_conv(i, c) for i, c in enumerate(self.convs)))
        object.__setattr__(self, "hidden", tuple(_whole("hidden", h) for h in self.hidden))
        if len(self.in_shape) != 3:
            raise MincapError(f"spec: in_shape must be [channels, height, width], got {list(self.in_shape)}")
        object.__setattr__(self, "in_shape", tuple(_whole("in_shape", v) for v in self.in_shape))
        if self.family not in FAMILIES:
            raise MincapError(f"spec: family must be one of {FAMILIES}, got {self.family!r}")
        if self.family == "mlp" and self.convs:
            raise MincapError("spec: an mlp has no convs")
        if self.activation not in ACTIVATIONS:
            raise MincapError(f"spec: activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.head not in HEADS:
            raise MincapError(f"spec: head must be one of {HEADS}, got {self.head!r}")
        if any(h < 1 for h in self.hidden) or any(c.channels < 1 or c.kernel < 1 for c in self.convs):
            raise MincapError("spec: widths, channels and kernels must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise MincapError("spec: dropout must be in [0, 1)")
        self.feature_shape()  # raises if the convs shrink the image to nothing

    def feature_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) after the conv blocks."""
        c, h, w = self.in_shape
        for i, cv in enumerate(self.convs):
            h = (h + 2 * cv.pad - cv.kernel) // cv.stride + 1
            w = (w + 2 * cv.pad - cv.kernel) // cv.stride + 1
            h, w = h // cv.pool, w // cv.pool
            c = cv.channels
            if h < 1 or w < 1:
                raise MincapError(f"spec: conv block {i} leaves no pixels (input {self.in_shape})")
        return c, h, w

    def to_dict(self) -> dict:
        """Only the fields that differ from the defaults, convs as short lists: a short JSON."""
        d = self.to_dict_full()
        default = Spec(family=self.family).to_dict_full()
        return {k: v for k, v in d.items() if k == "family" or v != default[k]}

    def to_dict_full(self) -> dict:
        d = asdict(self)
        d["convs"] = [c.as_list() for c in self.convs]
        d["hidden"] = list(self.hidden)
        d["in_shape"] = list(self.in_shape)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> Spec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise MincapError(f"spec: unknown field(s) {', '.join(sorted(unknown))}")
        try:
            return cls(**d)
        except TypeError as err:
            raise MincapError(f"spec: {err}") from None

    @classmethod
    def from_json(cls, text: str) -> Spec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise MincapError(f"spec: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(d, dict):
            raise MincapError("spec: JSON must be an object")
        return cls.from_dict(d)

    def n_weight_layers(self) -> int:
        """Conv and linear layers `build` makes (a separable block has two convs): one bit width each."""
        return len(self.convs) + sum(c.separable for c in self.convs) + len(self.hidden) + 1

    def with_data(self, in_shape: tuple[int, int, int], n_classes: int) -> Spec:
        """The same architecture sized for another dataset."""
        return replace(self, in_shape=tuple(in_shape), n_classes=int(n_classes))

    def structure(self) -> Spec:
        """This spec with every width (conv channels, hidden units) set to 1: equal for specs that differ only in widths."""
        return replace(self, convs=tuple(replace(c, channels=1) for c in self.convs), hidden=(1,) * len(self.hidden))


PRESETS: dict[str, Spec] = {
    # pytorch/examples mnist/main.py as of 2016: conv 1->10 k5, conv 10->20 k5, fc 320->50->10.
    "pytorch-example-2016": Spec(
        convs=(Conv(10, 5, pool=2), Conv(20, 5, pool=2)), hidden=(50,), dropout=0.5
    ),
    # LeNet-5 (LeCun et al. 1998) with ReLU and max pooling: 61,706 parameters.
    "lenet5": Spec(convs=(Conv(6, 5, pool=2, pad=2), Conv(16, 5, pool=2)), hidden=(120, 84)),
    # A ~2.7k-parameter all-conv net with a global-average-pool head.
    "tiny": Spec(
        convs=(Conv(6, 3, pool=2, pad=1), Conv(12, 3, pool=2, pad=1), Conv(16, 3, pad=1)),
        batch_norm=True,
        head="gap",
    ),
    # A ~10k-parameter 4-block CNN: the issue-4 net of 6.4k parameters stopped at 98.94% on
    # validation, so a second study seed is ~1.5x wider, chosen to clear 99% there.
    "small": Spec(
        convs=(Conv(8, 3, pool=2, pad=1), Conv(16, 3, pool=2, pad=1), Conv(24, 3, pad=1), Conv(24, 3, pad=1)),
        batch_norm=True,
        head="gap",
    ),
    # Issue 15's seed presets: GAP CNNs between tiny and small, 4+ channels per layer. Measured
    # once each on validation (4-bit, seed recipe, 20 epochs): gap-3k (3,514 parameters) 98.56%
    # at 13,200 bits, gap-5k (5,026) 98.78% at 18,120 bits; see studies/mnist-99.toml.
    "gap-3k": Spec(
        convs=(Conv(8, 5, pool=2, pad=2), Conv(12, 3, pool=2, pad=1), Conv(20, 3, pad=1)),
        batch_norm=True,
        head="gap",
    ),
    "gap-5k": Spec(
        convs=(Conv(8, 3, pool=2, pad=1), Conv(16, 3, pool=2, pad=1), Conv(24, 3, pad=1)),
        batch_norm=True,
        head="gap",
    ),
    # Depthwise-separable blocks after one plain conv, no padding, GAP: the shape of the
    # 697-parameter Keras net at 99.0% (JoshWarn/Parameter-Efficient-MNIST, 200 epochs), here
    # with batch norm after each block (folded into the file).
    "sep-700": Spec(
        convs=(Conv(7, 3, pool=2), Conv(10, 3, separable=True), Conv(10, 3, separable=True),
               Conv(11, 3, separable=True), Conv(12, 3, separable=True)),
        batch_norm=True,
        head="gap",
    ),
    # The same shape at 16 channels: 1,770 parameters. Measured on validation (4-bit LSQ, 1 thread,
    # 2-core CPU): 30 epochs, 8 quantization-aware (under load): 98.92% in 9,512 bits; 50 epochs,
    # 12 quantization-aware (idle): 99.04% (studies/artifacts/README.md).
    "sep-1.8k": Spec(
        convs=(Conv(8, 3, pool=2), *(Conv(16, 3, separable=True) for _ in range(4))),
        batch_norm=True,
        head="gap",
    ),
    # At 20 channels: 2,410 parameters; 30 epochs, 8 quantization-aware: 99.10% in 12,240 bits
    # (format version 2; studies/artifacts/sep20-99.mincap is its path's next step).
    "sep-2.4k": Spec(
        convs=(Conv(8, 3, pool=2), *(Conv(20, 3, separable=True) for _ in range(4))),
        batch_norm=True,
        head="gap",
    ),
    "mlp-32": Spec(family="mlp", hidden=(32,)),
    # A float teacher for distillation (issue 30 asks for >= 99.5% validation): two padded 3x3
    # pairs of 16 and 32 channels, batch norm, a 128-unit layer, 218,586 parameters. Chosen for
    # its cost, ~45 s an epoch on one core of the 2-core CPU (the 32/64 version is ~2.6x dearer);
    # its validation accuracy is measured when it is trained and stored with the cached teacher.
    "teacher": Spec(
        convs=(Conv(16, 3, pad=1), Conv(16, 3, pool=2, pad=1), Conv(32, 3, pad=1), Conv(32, 3, pool=2, pad=1)),
        hidden=(128,),
        batch_norm=True,
        dropout=0.25,
    ),
}


def parse_arch(text: str) -> Spec:
    """A preset name or a JSON spec."""
    if text in PRESETS:
        return PRESETS[text]
    if text.lstrip().startswith("{"):
        return Spec.from_json(text)
    raise MincapError(f"--arch: {text!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON spec")


def _activation(name: str):
    return {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "leaky_relu": nn.LeakyReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "tanh": nn.Tanh,
        "hardtanh": nn.Hardtanh,
    }[name]()


def build(spec: Spec):
    """The `nn.Module` for `spec`: `net.features` (conv blocks) and `net.classifier` (head)."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.spec = spec
            feats: list[nn.Module] = []
            c = spec.in_shape[0]
            for cv in spec.convs:
                if cv.separable:  # depthwise (bias kept: no batch norm follows it), then 1x1 pointwise
                    feats.append(nn.Conv2d(c, c, cv.kernel, cv.stride, cv.pad, groups=c))
                    feats.append(nn.Conv2d(c, cv.channels, 1, bias=not spec.batch_norm))
                else:
                    feats.append(nn.Conv2d(c, cv.channels, cv.kernel, cv.stride, cv.pad, bias=not spec.batch_norm))
                if spec.batch_norm:
                    feats.append(nn.BatchNorm2d(cv.channels))
                feats.append(_activation(spec.activation))
                if cv.pool > 1:
                    feats.append(nn.MaxPool2d(cv.pool))
                c = cv.channels
            self.features = nn.Sequential(*feats)
            head: list[nn.Module] = []
            if spec.head == "gap":
                head += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
                width = spec.feature_shape()[0]
            else:
                head.append(nn.Flatten())
                fc, fh, fw = spec.feature_shape()
                width = fc * fh * fw
            for h in spec.hidden:
                if spec.dropout:
                    head.append(nn.Dropout(spec.dropout))
                head += [nn.Linear(width, h), _activation(spec.activation)]
                width = h
            if spec.dropout and spec.hidden:
                head.append(nn.Dropout(spec.dropout))
            head.append(nn.Linear(width, spec.n_classes))
            self.classifier = nn.Sequential(*head)

        def forward(self, x):
            return self.classifier(self.features(x))

    return Net()


def count_params(model) -> int:
    """Trainable parameters (batch-norm running statistics are buffers, not counted here)."""
    return sum(p.numel() for p in model.parameters())


def prepare(x_uint8):
    """The fixed input map of every mincap network: uint8 pixels -> float in [0, 1]."""
    return x_uint8.float().div_(255.0)



def is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1


def pruned_spec(model: nn.Module, spec: Spec) -> Spec:
    """`spec` with the channel and hidden widths `model` has now."""
    convs = iter(m for m in model.features if isinstance(m, nn.Conv2d))
    blocks = []
    for c in spec.convs:
        if c.separable:
            next(convs)  # the depthwise conv: its channels are the block's input channels
        blocks.append(replace(c, channels=next(convs).out_channels))
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    return replace(spec, convs=tuple(blocks), hidden=tuple(m.out_features for m in linears[:-1]))
