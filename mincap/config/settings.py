"""The settings of one training run and of its compression, and the data split's defaults.

Frozen dataclasses shared by the command line, the search (`mincap.search.space` builds
them from a trial) and the library: one source of truth for every default. Nothing here
imports torch, so `mincap --help` builds its options from these instantly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mincap.errors import MincapError

__all__ = ["AUGMENT_RANGES", "CRITERIA", "DEFAULT_N_VAL", "DEFAULT_SPLIT_SEED", "QUANTIZERS",
           "CompressConfig", "TrainConfig", "parse_steps"]

DEFAULT_N_VAL = 5000  # validation images held out of the official training set
DEFAULT_SPLIT_SEED = 0
CRITERIA = ("l1", "l2", "taylor", "random", "bn", "fpgm", "lamp")
QUANTIZERS = ("max", "mse", "lsq")  # how weight scales are found; see mincap.nets.quant
# The geometric augmentation settings of `TrainConfig` (`mincap.training.augment`) and the closed
# range each must lie in; the CLI and the study spaces are checked against the same ranges.
AUGMENT_RANGES = {
    "rotate_deg": (0.0, 180.0),
    "scale_frac": (0.0, 0.5),
    "shear_deg": (0.0, 45.0),
    "translate_px": (0.0, 14.0),
    "elastic_alpha": (0.0, 100.0),
    "elastic_sigma": (0.5, 16.0),
}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (shared by the CLI, search and benchmarks)."""

    epochs: int = 15
    batch_size: int = 256
    lr: float = 0.01
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    augment_shift: int = 1
    seed: int = 0
    eval_batch_size: int = 5000
    distill_weight: float = 0.0  # weight of the teacher's soft targets in the loss (0: no distillation)
    distill_temperature: float = 4.0  # softmax temperature of the soft targets
    # Geometric augmentation (`mincap.training.augment`): after the shift, one grid_sample per
    # batch, drawn from its own generator seeded by `seed`. All at these defaults: off, as before.
    rotate_deg: float = 0.0  # rotation angle uniform in [-r, r] degrees
    scale_frac: float = 0.0  # scale factor uniform in [1 - s, 1 + s]
    shear_deg: float = 0.0  # horizontal shear angle uniform in [-a, a] degrees
    translate_px: float = 0.0  # sub-pixel translation uniform in [-t, t] pixels, per axis
    elastic_alpha: float = 0.0  # elastic distortion strength in pixels (Simard et al. 2003)
    elastic_sigma: float = 4.0  # the elastic field's Gaussian smoothing (std) in pixels

    def __post_init__(self) -> None:
        for key, (lo, hi) in AUGMENT_RANGES.items():
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise MincapError(f"{key} must be within [{lo:g}, {hi:g}], got {v!r}")
            object.__setattr__(self, key, float(v))

    def to_dict(self) -> dict:
        """The settings as a dict; augmentation settings at their defaults (off) are left out, so
        the records and cache keys (distillation teachers) of runs without them stay the same."""
        d = asdict(self)
        for key in AUGMENT_RANGES:
            if d[key] == _TRAIN_DEFAULTS[key]:
                del d[key]
        return d


_TRAIN_DEFAULTS = {k: TrainConfig.__dataclass_fields__[k].default for k in AUGMENT_RANGES}


@dataclass(frozen=True)
class CompressConfig:
    bits: int | None = None  # uniform weight bit width 1..8, None = float32 (reference)
    bits_per_layer: tuple[int, ...] | None = None  # overrides `bits`, one per conv/linear layer in order
    per_channel: bool = True  # per-output-channel scales vs per-layer
    symmetric: bool = True
    qat_epochs: int = 3  # last epochs of the TrainConfig run trained with fake-quant (start float, switch)
    prune_ratio: float = 0.0  # structured (torch-pruning) fraction of channels/neurons removed
    prune_steps: int = 1
    prune_criterion: str = "l1"  # l1, l2, taylor, random, bn, fpgm, lamp
    prune_finetune_epochs: int = 1
    sparsity: float = 0.0  # optional unstructured magnitude sparsity, mask paid for in the file
    quantizer: str = "max"  # max (max|w| scales, what mincap.training.batched trains), mse or lsq (mincap.nets.quant)
    anneal_epochs: int = 0  # first QAT epochs at widths stepping down from 8 bits to the target
    prune_global: bool = False  # rank channels across layers (torch-pruning's global pruning) instead of per layer
    prune_min_channels: int = 1  # every pruned layer keeps at least this many channels/neurons
    # Shrinking steps after training (`mincap.compression.path`, grammar in `parse_steps`); a search trial
    # runs them with the study's target (`mincap.search.path_trial`). "" = none.
    path: str = ""

    def __post_init__(self) -> None:
        if self.quantizer not in QUANTIZERS:
            raise MincapError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {self.quantizer!r}")
        if self.quantizer != "max" and not self.symmetric:
            raise MincapError(f"the {self.quantizer} quantizer is symmetric only (drop --asymmetric)")
        if self.anneal_epochs < 0 or self.prune_min_channels < 1:
            raise MincapError("anneal epochs must be >= 0 and the per-layer channel floor >= 1")
        if self.bits is not None and not 1 <= self.bits <= 8:
            raise MincapError(f"bits must be 1..8, got {self.bits}")
        if self.bits_per_layer is not None:
            object.__setattr__(self, "bits_per_layer", tuple(int(b) for b in self.bits_per_layer))
            if any(not 0 <= b <= 8 for b in self.bits_per_layer):
                raise MincapError("bits per layer must be 1..8 (0 = float32)")
        if not 0.0 <= self.prune_ratio < 1.0:
            raise MincapError("prune ratio must be in [0, 1)")
        if not 0.0 <= self.sparsity < 1.0:
            raise MincapError("sparsity must be in [0, 1)")
        if self.prune_steps < 1 or self.prune_finetune_epochs < 0 or self.qat_epochs < 0:
            raise MincapError("prune steps must be >= 1, epochs >= 0")
        if self.path:
            parse_steps(self.path)
        if self.prune_criterion not in CRITERIA:
            raise MincapError(f"prune criterion must be one of {', '.join(CRITERIA)}")

    def layer_bits(self, n_layers: int) -> list[int | None]:
        if self.bits_per_layer is not None:
            if len(self.bits_per_layer) != n_layers:
                raise MincapError(
                    f"--bits-per-layer has {len(self.bits_per_layer)} values, the network has "
                    f"{n_layers} conv/linear layers"
                )
            return [b or None for b in self.bits_per_layer]
        return [self.bits] * n_layers


def parse_steps(text: str) -> list[dict]:
    """'sparsity=0.3;prune=0.2,bits=2;side=6' -> [{'sparsity': 0.3}, {'prune': 0.2, 'bits': (2,)}, {'side': 6}].

    `side=B` exports the symmetric layers' biases and scale exponents at B bits from that step on
    (format version 5); a step with nothing else is not fine-tuned, only exported again."""
    steps = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        step: dict = {}
        for item in part.split(","):
            key, eq, val = (x.strip() for x in item.partition("="))
            try:
                if not eq:
                    raise ValueError
                if key == "bits":
                    step[key] = tuple(int(b) for b in val.split(":"))
                    if any(not 1 <= b <= 8 for b in step[key]):
                        raise ValueError
                elif key == "side":
                    step[key] = int(val)
                    if not 2 <= step[key] <= 8:
                        raise ValueError
                elif key in ("prune", "sparsity"):
                    step[key] = float(val)
                    if not 0.0 <= step[key] < 1.0:
                        raise ValueError
                else:
                    raise ValueError
            except ValueError:
                raise MincapError(f"--path: bad step item {item!r} (expected prune=R, sparsity=S with R, S in "
                                  "[0, 1), bits=B / bits=B1:B2:... with B in 1..8, or side=B with B in "
                                  "2..8)") from None
        steps.append(step)
    if not steps:
        raise MincapError("--path: no steps")
    return steps
