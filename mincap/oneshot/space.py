"""The one-shot search space: which sub-networks one supernet holds, and one of them.

`SupernetSpace` fixes the family (the default study's GAP CNN): a plain first conv, then
depthwise-separable blocks (or plain ones, `separable=False`: a second supernet, not a
choice inside one), batch norm after every block, max pool after the first `pools` blocks,
one padding, one kernel size, one head: a global average pool (`gap`, the default study's) or
the last block's feature map flattened (`flatten`: a linear layer reads every position, so
the head need not rely on translation invariance -- the CNN cells of the locality question,
where the pixels are permuted; one head per supernet, like the block kind). Elastic are:

* width: each block keeps its first k channels, k on a grid (`width_step`) in `widths0`
  (the first conv) or `widths` (the others);
* depth: `depth` counts conv blocks, the first conv included (the study's `conv_depth`);
  trailing blocks are left out;
* bits: 2..5 per conv/linear layer, LSQ steps learned per (layer, width, bits).

Kernel size is fixed: an elastic kernel needs OFA's kernel transform matrices and a 5x5
supernet costs ~2.8x the depthwise arithmetic for a choice the studies rarely took in their
smallest 99% networks (all 3x3). Block kind is fixed per supernet for the same reason of
cost: a plain 3x3 block at these widths has ~9x the weights of a separable one and lies far
above the sizes the search is after, so one supernet covering both would spend most of its
training on sub-networks that cannot win.

`SubnetConfig` is one sub-network: its widths (one per block, so its depth), bits per layer
(None: float) and magnitude sparsity (applied when it is extracted, not while training).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from mincap.errors import MincapError
from mincap.nets.models import HEADS, Conv, Spec

__all__ = ["HEADS", "PADDINGS", "SubnetConfig", "SupernetSpace"]

PADDINGS = ("valid", "same")


@dataclass(frozen=True)
class SubnetConfig:
    """One sub-network: `widths[i]` channels in block i (len = depth), `bits` per layer or None."""

    widths: tuple[int, ...]
    bits: tuple[int, ...] | None = None
    sparsity: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.bits is not None:
            object.__setattr__(self, "bits", tuple(int(b) for b in self.bits))
        if not 0.0 <= self.sparsity < 1.0:
            raise MincapError(f"oneshot: sparsity must be in [0, 1), got {self.sparsity}")

    @property
    def depth(self) -> int:
        return len(self.widths)

    def quantized(self, bits: tuple[int, ...] | None) -> SubnetConfig:
        return SubnetConfig(self.widths, bits, self.sparsity)

    def to_dict(self) -> dict:
        return {"widths": list(self.widths), "bits": None if self.bits is None else list(self.bits),
                "sparsity": self.sparsity}


@dataclass(frozen=True)
class SupernetSpace:
    """The family and its elastic ranges (see the module docstring). Ranges are [low, high]."""

    # Narrower than the per-trial study's 4..32 / 4..24: every sub-network shares the first
    # channels, and a 4-channel smallest net pulls them hardest. Measured (11k train images, 8
    # float epochs, lr 0.04, one core): sep-1.8k's one-shot validation accuracy 96.2% in this
    # space against 94.5% in 4..16 / 4..24; the 99% networks the studies found (sep-1.8k,
    # sep-2.4k, the 7,968-bit chosen one) all lie inside it.
    widths0: tuple[int, int] = (6, 12)
    widths: tuple[int, int] = (8, 20)
    width_step: int = 2
    depth: tuple[int, int] = (3, 5)
    bits: tuple[int, int] = (2, 5)
    kernel0: int = 3
    kernel: int = 3
    separable: bool = True
    pools: int = 1
    padding: str = "valid"
    head: str = "gap"  # `mincap.nets.models.HEADS`: "gap" or "flatten" (see the module docstring)
    # One LSQ step per layer where no batch norm follows it (the depthwise convs, the head) and
    # per channel after folding elsewhere: the study's "layer" scales, its smaller files
    # (sep-1.8k 8,536 bits against 9,064 with per-channel scales at equal accuracy).
    per_channel: bool = False
    # Steps per (layer, width, bits) when True, per (layer, bits) shared by all widths when False.
    step_per_width: bool = True
    in_shape: tuple[int, int, int] = (1, 28, 28)
    n_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("widths0", "widths", "depth", "bits", "in_shape"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("widths0", "widths", "depth", "bits"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise MincapError(f"oneshot space: {name} must be [low, high], 1 <= low <= high")
        if self.width_step < 1:
            raise MincapError("oneshot space: width_step must be >= 1")
        for name in ("widths0", "widths"):
            lo, hi = getattr(self, name)
            if (hi - lo) % self.width_step:
                raise MincapError(f"oneshot space: {name} {lo}..{hi} is not on a grid of "
                                  f"{self.width_step}")
        if self.depth[0] < 2:
            raise MincapError("oneshot space: depth counts the first conv; at least 2 blocks")
        if not (2 <= self.bits[0] and self.bits[1] <= 8):
            raise MincapError("oneshot space: bits must lie in 2..8 (LSQ, symmetric)")
        if self.padding not in PADDINGS:
            raise MincapError(f"oneshot space: padding must be one of {PADDINGS}")
        if self.head not in HEADS:
            raise MincapError(f"oneshot space: head must be one of {HEADS}")
        if not 0 <= self.pools <= self.depth[0]:
            raise MincapError("oneshot space: pools must be between 0 and the smallest depth")
        self.spec(self.largest())  # raises when the deepest net shrinks the image to nothing

    # -- the grid -------------------------------------------------------------------------
    def width_choices(self, block: int) -> tuple[int, ...]:
        lo, hi = self.widths0 if block == 0 else self.widths
        return tuple(range(lo, hi + 1, self.width_step))

    def max_width(self, block: int) -> int:
        return self.width_choices(block)[-1]

    def bit_choices(self) -> tuple[int, ...]:
        return tuple(range(self.bits[0], self.bits[1] + 1))

    def n_layers(self, depth: int) -> int:
        """Conv and linear layers of a sub-network of `depth` blocks (a separable block has two)."""
        return 1 + (2 if self.separable else 1) * (depth - 1) + 1

    def largest(self, bits: int | None = None) -> SubnetConfig:
        d = self.depth[1]
        return SubnetConfig(tuple(self.max_width(i) for i in range(d)),
                            None if bits is None else (bits,) * self.n_layers(d))

    def smallest(self, bits: int | None = None) -> SubnetConfig:
        d = self.depth[0]
        return SubnetConfig(tuple(self.width_choices(i)[0] for i in range(d)),
                            None if bits is None else (bits,) * self.n_layers(d))

    def top(self, reach: float) -> SupernetSpace:
        """The sub-space of each elastic range's top `reach` fraction of its choices (at least
        its largest one): depth, both width ranges and the bits. Progressive shrinking draws its
        children here while `reach` grows from the largest network alone (0) to the whole space
        (1)."""
        if not 0.0 <= reach <= 1.0:
            raise MincapError(f"oneshot space: reach must be in [0, 1], got {reach}")

        def cut(rng: tuple[int, int], step: int = 1) -> tuple[int, int]:
            lo, hi = rng
            n = (hi - lo) // step + 1
            keep = max(1, math.ceil(reach * n - 1e-9))  # 1e-9: reach * n lands on an integer
            return (hi - (keep - 1) * step, hi)

        return replace(self, widths0=cut(self.widths0, self.width_step),
                       widths=cut(self.widths, self.width_step), depth=cut(self.depth),
                       bits=cut(self.bits))

    def contains(self, cfg: SubnetConfig) -> bool:
        try:
            self.check(cfg)
        except MincapError:
            return False
        return True

    def check(self, cfg: SubnetConfig) -> None:
        """Raise `MincapError` unless `cfg` is a sub-network of this space."""
        if not self.depth[0] <= cfg.depth <= self.depth[1]:
            lo, hi = self.depth
            raise MincapError(f"oneshot: depth {cfg.depth} outside {lo}..{hi}")
        for i, w in enumerate(cfg.widths):
            if w not in self.width_choices(i):
                raise MincapError(f"oneshot: block {i} width {w} not in {self.width_choices(i)}")
        if cfg.bits is not None:
            if len(cfg.bits) != self.n_layers(cfg.depth):
                raise MincapError(f"oneshot: {len(cfg.bits)} bit widths for "
                                  f"{self.n_layers(cfg.depth)} layers")
            if any(b not in self.bit_choices() for b in cfg.bits):
                lo, hi = self.bits
                raise MincapError(f"oneshot: bits {cfg.bits} outside {lo}..{hi}")

    # -- as an ordinary network -----------------------------------------------------------
    def spec(self, cfg: SubnetConfig) -> Spec:
        """The mincap `Spec` of sub-network `cfg` (batch norm on; `build(spec)` loads `extract`'s
        state)."""
        convs = []
        for i, w in enumerate(cfg.widths):
            k = self.kernel0 if i == 0 else self.kernel
            pad = k // 2 if self.padding == "same" else 0
            pool = 2 if i < self.pools else 1
            convs.append(Conv(w, k, 1, pool, pad, separable=self.separable and i > 0))
        return Spec("cnn", tuple(convs), (), "relu", True, self.head, 0.0, self.in_shape,
                    self.n_classes)

    def head_positions(self, depth: int) -> int:
        """How many positions of each channel the head reads at `depth`: 1 for `gap`, the
        feature map's height x width for `flatten` (its weight's columns are channel-major,
        `torch.flatten` of (C, H, W), so the first k channels are its first k x positions)."""
        if self.head == "gap":
            return 1
        _, h, w = self.spec(SubnetConfig(tuple(self.max_width(i) for i in range(depth)))).feature_shape()
        return h * w

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SupernetSpace:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise MincapError(f"oneshot space: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**d)

    def with_data(self, in_shape: tuple[int, int, int], n_classes: int) -> SupernetSpace:
        d = self.to_dict()
        d.update(in_shape=tuple(in_shape), n_classes=int(n_classes))
        return SupernetSpace(**d)
