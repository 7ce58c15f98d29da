"""Study files: one TOML file names a search, parsed into one frozen dataclass.

`StudyConfig` is the single source of truth shared by `mincap search`, `mincap summary`,
`mincap export` and the library. A study file has these tables (all optional but
`[study]`; every key has a default shown in `studies/mnist-99.toml`):

    [study]     name, dataset, target (validation accuracy a trial must reach), sampler
                ("tpe", "nsga2" or "random"), seed, seeds (preset names enqueued first)
    [data]      n_val, split_seed, limit (train on the first N train images; tests); a
                memorization set (`mnist-random-N`) needs n_val = N: its validation is its
                training set (`mincap.data.check_split`, checked here)
    [budget]    trials, timeout_s
    [storage]   url (default: SQLite file `<name>.db` next to the study file), artifacts (folder),
                heartbeat_interval_s, grace_period_s, sqlite_timeout_s
    [space]     the search space: a two-element list is a [low, high] range, a longer or
                non-numeric list a set of choices, a scalar a fixed value (`prune_ratios` is
                always a set; `channels0`, the first block's own range, defaults to `channels`)
    [early_stop] enabled, margin, min_progress, min_feasible, hopeless
    [fidelity]  screening before full training (`mincap.search.fidelity`): enabled, epochs,
                subset, promote, min_peers, min_val_acc
    [seed_recipe] the seed presets' training recipe: epochs, batch_size, lr, weight_decay,
                augment, qat_fraction, bits (each within the space; unset: a rule on the space).
                A seed may override it for itself: "sep-1.8k@epochs=80,path=1" (recipe keys, plus
                `path`, an index into space.paths, and `scales`, one of space.scales)

Unknown keys, wrong types and impossible ranges raise `MincapError` naming the key
(`mincap` exits 2 with that one line).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import tomllib

from mincap.config import QUANTIZERS, parse_steps
from mincap.data import check_split
from mincap.errors import MincapError
from mincap.nets.models import ACTIVATIONS, PRESETS

__all__ = [
    "Budget",
    "DataSection",
    "EarlyStop",
    "Fidelity",
    "SeedRecipe",
    "Space",
    "StorageSection",
    "StudyConfig",
    "StudySection",
    "load_study_file",
    "DEFAULT_STUDY",
]

DEFAULT_STUDY = Path("studies/mnist-99.toml")
SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class StudySection:
    name: str = "mnist-99"
    dataset: str = "mnist"
    target: float = 0.99
    sampler: str = "tpe"
    seed: int = 0
    seeds: tuple[str, ...] = ("tiny",)


@dataclass(frozen=True)
class DataSection:
    n_val: int = 5000
    split_seed: int = 0
    limit: int = 0  # 0: the whole train split


@dataclass(frozen=True)
class Budget:
    trials: int = 100
    timeout_s: float = 0.0  # 0: no time limit


@dataclass(frozen=True)
class StorageSection:
    url: str = ""  # "": sqlite:///<study dir>/<name>.db
    artifacts: str = ""  # "": <study dir>/<name>.artifacts
    heartbeat_interval_s: int = 30
    grace_period_s: int = 90
    sqlite_timeout_s: float = 120.0


@dataclass(frozen=True)
class Space:
    """Ranges `(low, high)` are sampled (ints as ints, `log` where noted); tuples of choices are categorical."""

    families: tuple[str, ...] = ("cnn",)
    conv_depth: tuple[int, int] = (2, 4)
    channels: tuple[int, int] = (2, 32)  # log-uniform per block
    channels0: tuple[int, int] = (0, 0)  # the first block's own range (it may be wider); (0, 0): `channels`
    kernels: tuple[int, ...] = (3, 5)
    separable: tuple[bool, ...] = (False,)  # per block after the first: depthwise-separable or not
    padding: tuple[str, ...] = ("same",)  # per trial: "same" (pad k // 2) or "valid" (no padding)
    pools: tuple[int, int] = (1, 2)  # how many of the first blocks end in a 2x2 max pool
    heads: tuple[str, ...] = ("gap", "flatten")
    hidden_depth: tuple[int, int] = (0, 1)
    hidden_width: tuple[int, int] = (8, 64)  # log-uniform
    mlp_depth: tuple[int, int] = (1, 2)
    mlp_width: tuple[int, int] = (16, 128)  # log-uniform
    batch_norm: tuple[bool, ...] = (True,)
    activations: tuple[str, ...] = ("relu",)
    bits: tuple[int, int] = (2, 8)  # per conv/linear layer
    per_layer_bits: bool = True
    quantizers: tuple[str, ...] = ("max",)  # max, mse, lsq (mincap.nets.quant)
    # Weight scales: "channel" (one per output channel) or "layer" (one per layer; the convs batch
    # norm follows still store per-channel scales, batch norm's folded in: format version 3).
    scales: tuple[str, ...] = ("channel",)
    anneal_epochs: tuple[int, int] = (0, 0)  # first QAT epochs stepping the widths down from 8 bits
    prune_ratio: tuple[float, float] = (0.0, 0.5)
    prune_ratios: tuple[float, ...] = ()  # a set of choices (e.g. [0, 0.1, 0.2]); replaces the range when given
    prune_steps: tuple[int, int] = (1, 2)
    prune_criteria: tuple[str, ...] = ("l1",)
    finetune_epochs: tuple[int, int] = (1, 2)
    epochs: tuple[int, int] = (6, 16)
    qat_fraction: tuple[float, float] = (0.2, 0.5)
    lr: tuple[float, float] = (0.003, 0.05)  # log-uniform
    batch_size: tuple[int, ...] = (128, 256, 512)
    augment: tuple[int, int] = (0, 2)
    weight_decay: tuple[float, float] = (1e-5, 1e-3)  # log-uniform
    # Compression paths (`mincap.compression.path` steps after training; the trial's result is the smallest
    # step reaching the target); "" = none. The first one is the seed presets'.
    paths: tuple[str, ...] = ("",)
    path_stop_margin: float = 0.01  # a path ends after a step this far below the target


@dataclass(frozen=True)
class EarlyStop:
    """Stop a trial whose validation curve falls `margin` below every target-reaching trial's curve.

    Curves are compared at the same fraction of the training run (epoch / epochs), from
    `min_progress` on, and only once `min_feasible` trials have reached the target. Before
    that (and always), a trial more than `hopeless` below the target from `min_progress` on
    is stopped too: with a one-cycle schedule a net at 30% of its run that is still 10
    points short does not close the gap (none did in the first MNIST study).
    """

    enabled: bool = True
    margin: float = 0.02
    min_progress: float = 0.3
    min_feasible: int = 2
    hopeless: float = 0.1


@dataclass(frozen=True)
class Fidelity:
    """Screen each sampled trial with a short run before its full training (`mincap.search.fidelity`).

    The screening run trains `epochs` epochs on the first `subset` train images (0: all)
    with the trial's own bit widths and no pruning; a trial is promoted to full training
    when its (bits, validation accuracy) point is in the best `promote` fraction, by Pareto
    rank, of the screened trials so far (once `min_peers` exist) and reaches `min_val_acc`.
    """

    enabled: bool = False
    epochs: int = 2
    subset: int = 0  # 0: the whole train split
    promote: float = 0.5
    min_peers: int = 4
    min_val_acc: float = 0.0


@dataclass(frozen=True)
class SeedRecipe:
    """How the seed presets are trained: each value must lie in the space (an enqueued trial is a
    point of it). Unset (0, or -1 for `augment`), `mincap.search.space.preset_params` takes the
    longest training, the smallest batch, the geometric middle lr, the lowest weight decay, the
    middle shift, the largest QAT fraction and 4 bits (clipped to the space)."""

    epochs: int = 0
    batch_size: int = 0
    lr: float = 0.0
    weight_decay: float = 0.0
    augment: int = -1
    qat_fraction: float = 0.0
    bits: int = 0


@dataclass(frozen=True)
class StudyConfig:
    study: StudySection = field(default_factory=StudySection)
    data: DataSection = field(default_factory=DataSection)
    budget: Budget = field(default_factory=Budget)
    storage: StorageSection = field(default_factory=StorageSection)
    space: Space = field(default_factory=Space)
    early_stop: EarlyStop = field(default_factory=EarlyStop)
    fidelity: Fidelity = field(default_factory=Fidelity)
    seed_recipe: SeedRecipe = field(default_factory=SeedRecipe)
    path: str = ""  # the study file this came from ("" when built in code)

    @property
    def folder(self) -> Path:
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    @property
    def storage_url(self) -> str:
        return self.storage.url or f"sqlite:///{self.folder / (self.study.name + '.db')}"

    @property
    def artifacts_dir(self) -> Path:
        a = self.storage.artifacts
        return (self.folder / a) if a else self.folder / f"{self.study.name}.artifacts"


_SECTIONS = {f.name: f.type for f in dataclasses.fields(StudyConfig) if f.name != "path"}


def _convert(key: str, value: Any, hint: Any) -> Any:
    """Check `value` from TOML against the dataclass field type `hint`; lists become tuples."""
    origin = get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise MincapError(f"{key}: expected a list, got {type(value).__name__}")
        args = get_args(hint)
        elem = args[0]
        if len(args) == 2 and args[1] is not Ellipsis and len(value) != 2:
            raise MincapError(f"{key}: expected [low, high], got {len(value)} values")
        out = tuple(_convert(key, v, elem) for v in value)
        if len(args) == 2 and args[1] is not Ellipsis and out[0] > out[1]:
            raise MincapError(f"{key}: low {out[0]} is above high {out[1]}")
        if not out and key != "study.seeds":  # no seed trials is a valid choice; no choices is not
            raise MincapError(f"{key}: empty list")
        return out
    if hint is bool:
        if not isinstance(value, bool):
            raise MincapError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MincapError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MincapError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise MincapError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {hint}")  # a bug, not user input


def _section(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise MincapError(f"[{name}]: expected a table")
    hints = get_type_hints(cls)
    unknown = set(raw) - set(hints)
    if unknown:
        raise MincapError(f"[{name}]: unknown key {sorted(unknown)[0]!r}")
    return cls(**{k: _convert(f"{name}.{k}", v, hints[k]) for k, v in raw.items()})


def _validate(cfg: StudyConfig) -> None:
    s, sp = cfg.study, cfg.space

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise MincapError(msg)

    need(0.0 < s.target <= 1.0, f"study.target: {s.target} is not in (0, 1]")
    need(s.sampler in SAMPLERS, f"study.sampler: {s.sampler!r} is not one of {SAMPLERS}")
    need(cfg.budget.trials >= 0, "budget.trials: must be >= 0")
    need(cfg.budget.timeout_s >= 0, "budget.timeout_s: must be >= 0")
    need(cfg.data.n_val > 0, "data.n_val: must be positive")
    need(cfg.data.limit >= 0, "data.limit: must be >= 0")
    try:  # a memorization set: validation is its training set, never a held-out part of it
        check_split(s.dataset, cfg.data.n_val, cfg.data.limit or None)
    except MincapError as err:
        need(False, f"data.n_val: {err}")
    need(set(sp.families) <= {"mlp", "cnn"}, f"space.families: {sp.families} not within ('mlp', 'cnn')")
    need(set(sp.heads) <= {"gap", "flatten"}, f"space.heads: {sp.heads} not within ('gap', 'flatten')")
    need(1 <= sp.bits[0] and sp.bits[1] <= 8, "space.bits: widths must be within 1..8")
    need(0.0 <= sp.prune_ratio[0] and sp.prune_ratio[1] < 1.0, "space.prune_ratio: must be within [0, 1)")
    need(all(0.0 <= r < 1.0 for r in sp.prune_ratios), "space.prune_ratios: each must be within [0, 1)")
    need(set(sp.quantizers) <= set(QUANTIZERS) and sp.quantizers != (), f"space.quantizers: choose from {QUANTIZERS}")
    need(sp.anneal_epochs[0] >= 0, "space.anneal_epochs: must be >= 0")
    need(set(sp.padding) <= {"same", "valid"} and sp.padding != (), "space.padding: choose from same, valid")
    need(set(sp.scales) <= {"channel", "layer"}, "space.scales: choose from channel, layer")
    need(sp.path_stop_margin >= 0, "space.path_stop_margin: must be >= 0")
    for text in sp.paths:
        try:
            parse_steps(text) if text else None
        except MincapError as err:
            need(False, f"space.paths: {text!r}: {err}")
    need(sp.channels0 == (0, 0) or sp.channels0[0] >= 1, "space.channels0: widths must be >= 1 ([0, 0]: as channels)")
    need(sp.conv_depth[0] >= 1 or "cnn" not in sp.families, "space.conv_depth: a cnn needs >= 1 conv")
    need(sp.channels[0] >= 1 and sp.hidden_width[0] >= 1 and sp.mlp_width[0] >= 1, "space: widths must be >= 1")
    need(sp.epochs[0] >= 1, "space.epochs: must be >= 1")
    need(sp.lr[0] > 0 and sp.weight_decay[0] > 0, "space.lr/weight_decay: must be > 0 (log scale)")
    need(0.0 <= sp.qat_fraction[0] and sp.qat_fraction[1] <= 1.0, "space.qat_fraction: must be within [0, 1]")
    need(all(b >= 1 for b in sp.batch_size), "space.batch_size: must be >= 1")
    need(set(sp.activations) <= set(ACTIVATIONS), f"space.activations: choose from {ACTIVATIONS}")
    for name in s.seeds:
        preset, recipe, extras = seed_settings(name, cfg.seed_recipe)
        need(preset in PRESETS, f"study.seeds: unknown preset {preset!r}")
        _validate_seed_recipe(recipe, sp, need)
        if "path" in extras:
            need(0 <= extras["path"] < len(sp.paths), f"study.seeds: {name!r}: path is an index into space.paths "
                                                       f"(0..{len(sp.paths) - 1})")
        if "scales" in extras:
            need(extras["scales"] in sp.scales, f"study.seeds: {name!r}: scales must be one of space.scales")
    need(0.0 <= cfg.early_stop.margin <= 1.0, "early_stop.margin: must be within [0, 1]")
    need(0.0 < cfg.early_stop.hopeless <= 1.0, "early_stop.hopeless: must be within (0, 1]")
    fi = cfg.fidelity
    need(fi.epochs >= 1, "fidelity.epochs: must be >= 1")
    need(fi.subset >= 0, "fidelity.subset: must be >= 0 (0: the whole train split)")
    need(0.0 < fi.promote <= 1.0, "fidelity.promote: must be within (0, 1]")
    need(fi.min_peers >= 1, "fidelity.min_peers: must be >= 1")
    need(0.0 <= fi.min_val_acc <= 1.0, "fidelity.min_val_acc: must be within [0, 1]")
    _validate_seed_recipe(cfg.seed_recipe, sp, need)


SEED_EXTRAS = {"path": int, "scales": str}


def seed_settings(name: str, base: SeedRecipe) -> tuple[str, SeedRecipe, dict[str, Any]]:
    """A seed's preset, recipe and extras: "PRESET" takes `base`; "PRESET@key=value,..." overrides
    recipe keys (epochs, lr, ...) for this seed, or sets `path` (an index into space.paths) or
    `scales`. Such a seed is a study's own (its name is what the study remembers as enqueued)."""
    preset, _, rest = name.partition("@")
    if not rest:
        return preset, base, {}
    fields = {f.name: f.type for f in dataclasses.fields(SeedRecipe)}
    over, extras = {}, {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or (key not in fields and key not in SEED_EXTRAS):
            raise MincapError(f"study.seeds: {name!r}: expected PRESET@key=value,... with keys from "
                              f"{sorted([*fields, *SEED_EXTRAS])}")
        kind = SEED_EXTRAS.get(key) or {"int": int, "float": float}.get(str(fields.get(key)), float)
        try:
            v = kind(value.strip())
        except ValueError:
            raise MincapError(f"study.seeds: {name!r}: {key} must be {kind.__name__}") from None
        (extras if key in SEED_EXTRAS else over)[key] = v
    return preset, dataclasses.replace(base, **over), extras


def _validate_seed_recipe(r: SeedRecipe, sp: Space, need) -> None:
    def within(key: str, value: float, low: float, high: float) -> None:
        need(low <= value <= high, f"seed_recipe.{key}: {value} is outside space.{key} [{low}, {high}]")

    if r.epochs:
        within("epochs", r.epochs, *sp.epochs)
    if r.batch_size:
        need(r.batch_size in sp.batch_size, f"seed_recipe.batch_size: {r.batch_size} is not in space.batch_size")
    if r.lr:
        within("lr", r.lr, *sp.lr)
    if r.weight_decay:
        within("weight_decay", r.weight_decay, *sp.weight_decay)
    if r.augment != -1:
        within("augment", r.augment, *sp.augment)
    if r.qat_fraction:
        within("qat_fraction", r.qat_fraction, *sp.qat_fraction)
    if r.bits:
        within("bits", r.bits, *sp.bits)


def parse_study(raw: dict, *, path: str = "") -> StudyConfig:
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise MincapError(f"{path or 'study'}: unknown table [{sorted(unknown)[0]}]")
    hints = get_type_hints(StudyConfig)
    parts = {name: _section(name, hints[name], raw[name]) for name in _SECTIONS if name in raw}
    cfg = StudyConfig(**parts, path=str(path))
    _validate(cfg)
    return cfg


def load_study_file(path: str | Path = DEFAULT_STUDY) -> StudyConfig:
    """Read and check a study file; every problem is one `MincapError` line naming the key."""
    p = Path(path)
    if not p.is_file():
        raise MincapError(f"{p}: no such study file")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise MincapError(f"{p}: not valid TOML ({err})") from None
    try:
        return parse_study(raw, path=str(p))
    except MincapError as err:
        raise MincapError(f"{p}: {err}") from None
