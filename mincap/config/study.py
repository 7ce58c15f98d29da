"""Study files: one TOML file names a search, parsed into one frozen dataclass.

`StudyConfig` is the single source of truth shared by `mincap search`, `mincap summary`,
`mincap export` and the library. A study file has these tables (all optional but
`[study]`; every key, its type, what it accepts and its default: docs/study-file.md, generated
from these classes by `mincap.config.docgen`):

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
    [oneshot]   a one-shot search instead (`mincap.config.oneshot`): enabled, seeds, the supernet's
                recipe, its space, scoring and promotion

Unknown keys, wrong types and impossible ranges raise `MincapError` naming the key
(`mincap` exits 2 with that one line). A field's bounds and choices are its `Rule` (`checked`),
which both the validation and the generated page read; `_validate` adds what no bound can say.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import tomllib

from mincap.config import AUGMENT_RANGES, QUANTIZERS, parse_steps
from mincap.config.oneshot import Oneshot, check_oneshot, preset_subnet
from mincap.config.rules import Rule, checked, rules
from mincap.data import check_split
from mincap.errors import MincapError
from mincap.nets.models import ACTIVATIONS, PRESETS

__all__ = [
    "Budget",
    "DataSection",
    "EarlyStop",
    "Fidelity",
    "Oneshot",
    "SeedRecipe",
    "Space",
    "StorageSection",
    "StudyConfig",
    "StudySection",
    "load_study_file",
    "DEFAULT_STUDY",
    "Rule",
]

DEFAULT_STUDY = Path("studies/mnist-99.toml")
SAMPLERS = ("tpe", "nsga2", "random")


def _augment(default: tuple[float, float], key: str):
    lo, hi = AUGMENT_RANGES[key]
    return checked(default, ge=lo, le=hi)


_RECIPE = "within space.{0} (0: unset)"


@dataclass(frozen=True)
class StudySection:
    """What is searched for, and how trials are drawn."""

    name: str = "mnist-99"  # the study in its storage: a changed space, target or split needs a new name
    dataset: str = checked("mnist", note="a dataset name (`mincap.data`), checked when the search loads it")  # searched on
    target: float = checked(0.99, gt=0.0, le=1.0)  # the validation accuracy a trial must reach
    sampler: str = checked("tpe", choices=SAMPLERS)  # Optuna's sampler
    seed: int = 0  # the sampler's seed
    # Preset names enqueued first (`mincap.nets.models.PRESETS`), trained by [seed_recipe]; a seed
    # may override it for itself: "sep-1.8k@epochs=80,path=1" (recipe keys, `path`, `scales`).
    seeds: tuple[str, ...] = checked(("tiny",), note="preset names, each optionally PRESET@key=value,...; may be empty")


@dataclass(frozen=True)
class DataSection:
    """The validation split, held out of the dataset's official training set (never the test set)."""

    n_val: int = checked(5000, gt=0, note="a memorization set (`mnist-random-N`): N")  # validation images
    split_seed: int = 0  # which images are held out
    limit: int = checked(0, ge=0)  # train on the first N train images (tests); 0: the whole train split


@dataclass(frozen=True)
class Budget:
    """How much one `mincap search` run does (`--trials` and `--timeout` override it)."""

    trials: int = checked(100, ge=0)  # trials that drew a network
    timeout_s: float = checked(0.0, ge=0.0)  # 0: no time limit


@dataclass(frozen=True)
class StorageSection:
    """Where the trials and their `.mincap` files are kept, and when a silent worker counts as dead."""

    url: str = ""  # "": sqlite:///<study dir>/<name>.db
    artifacts: str = ""  # "": <study dir>/<name>.artifacts
    heartbeat_interval_s: int = 30  # seconds between a running trial's heartbeats
    grace_period_s: int = 90  # a trial silent this long is failed and re-queued by the next search
    sqlite_timeout_s: float = 120.0  # seconds a SQLite write waits for the lock


@dataclass(frozen=True)
class Space:
    """Ranges `(low, high)` are sampled (ints as ints, `log` where noted); tuples of choices are categorical."""

    families: tuple[str, ...] = checked(("cnn",), choices=("mlp", "cnn"))  # network kinds drawn
    conv_depth: tuple[int, int] = checked((2, 4), note="low >= 1 when families has cnn")  # conv blocks
    channels: tuple[int, int] = checked((2, 32), ge=1)  # log-uniform per block
    # the first block's own range (it may be wider); (0, 0): `channels`
    channels0: tuple[int, int] = checked((0, 0), note="[0, 0], or widths >= 1")
    kernels: tuple[int, ...] = (3, 5)  # kernel sizes, drawn per block
    separable: tuple[bool, ...] = (False,)  # per block after the first: depthwise-separable or not
    padding: tuple[str, ...] = checked(("same",), choices=("same", "valid"))  # per trial: "same" (pad k // 2) or "valid" (no padding)
    pools: tuple[int, int] = (1, 2)  # how many of the first blocks end in a 2x2 max pool
    # true: every draw is a network for the input -- a block that would leave no pixels ends the
    # network there (elastic depth) and a pool of a 1-pixel map is left out; false: such a draw is
    # pruned untrained (the studies made before this key, resumed as they were drawn)
    fit_input: bool = False
    heads: tuple[str, ...] = checked(("gap", "flatten"), choices=("gap", "flatten"))  # global average pool or flatten
    hidden_depth: tuple[int, int] = (0, 1)  # hidden fc layers after a cnn's head
    hidden_width: tuple[int, int] = checked((8, 64), ge=1)  # log-uniform
    mlp_depth: tuple[int, int] = (1, 2)  # hidden layers of an mlp
    mlp_width: tuple[int, int] = checked((16, 128), ge=1)  # log-uniform
    batch_norm: tuple[bool, ...] = (True,)  # batch norm after each conv, or not
    activations: tuple[str, ...] = checked(("relu",), choices=ACTIVATIONS)  # drawn per trial
    bits: tuple[int, int] = checked((2, 8), ge=1, le=8)  # per conv/linear layer
    per_layer_bits: bool = True  # one width drawn per conv/linear layer; false: one per network
    quantizers: tuple[str, ...] = checked(("max",), choices=QUANTIZERS)  # how scales are found (mincap.nets.quant)
    # Weight scales: "channel" (one per output channel) or "layer" (one per layer; the convs batch
    # norm follows still store per-channel scales, batch norm's folded in: format version 3).
    scales: tuple[str, ...] = checked(("channel",), choices=("channel", "layer"))
    anneal_epochs: tuple[int, int] = checked((0, 0), ge=0)  # first QAT epochs stepping the widths down from 8 bits
    prune_ratio: tuple[float, float] = checked((0.0, 0.5), ge=0.0, lt=1.0)  # of each layer's channels, removed
    # a set of choices (e.g. [0, 0.1, 0.2]); replaces prune_ratio when given
    prune_ratios: tuple[float, ...] = checked((), ge=0.0, lt=1.0)
    prune_steps: tuple[int, int] = (1, 2)  # the pruning in this many steps
    prune_criteria: tuple[str, ...] = ("l1",)  # channel rankings (`mincap.config.CRITERIA`; checked when a trial prunes)
    finetune_epochs: tuple[int, int] = (1, 2)  # after each pruning step or path step
    epochs: tuple[int, int] = checked((6, 16), ge=1)  # training epochs
    qat_fraction: tuple[float, float] = checked((0.2, 0.5), ge=0.0, le=1.0)  # of the epochs, quantization-aware
    lr: tuple[float, float] = checked((0.003, 0.05), gt=0.0)  # log-uniform
    batch_size: tuple[int, ...] = checked((128, 256, 512), ge=1)  # choices
    augment: tuple[int, int] = (0, 2)  # random shift, in pixels
    # Geometric augmentation ranges (`mincap.training.augment`, TrainConfig's settings of these
    # names); off by default; a range with equal ends is a fixed value, no searched parameter.
    rotate_deg: tuple[float, float] = _augment((0.0, 0.0), "rotate_deg")  # rotation, in degrees either way
    scale_frac: tuple[float, float] = _augment((0.0, 0.0), "scale_frac")  # scale factor 1 - s .. 1 + s
    shear_deg: tuple[float, float] = _augment((0.0, 0.0), "shear_deg")  # horizontal shear, in degrees
    translate_px: tuple[float, float] = _augment((0.0, 0.0), "translate_px")  # sub-pixel translation per axis
    elastic_alpha: tuple[float, float] = _augment((0.0, 0.0), "elastic_alpha")  # elastic distortion strength, in pixels
    elastic_sigma: tuple[float, float] = _augment((4.0, 4.0), "elastic_sigma")  # the elastic field's smoothing, in pixels
    weight_decay: tuple[float, float] = checked((1e-5, 1e-3), gt=0.0)  # log-uniform
    # Compression paths (`mincap.compression.path` steps after training; the trial's result is the smallest
    # step reaching the target); "" = none. The first one is the seed presets'.
    paths: tuple[str, ...] = checked(("",), note="each \"\" or path steps (`mincap.compression.path`)")
    path_stop_margin: float = checked(0.01, ge=0.0)  # a path ends after a step this far below the target


@dataclass(frozen=True)
class EarlyStop:
    """Stop a trial whose validation curve falls `margin` below every target-reaching trial's curve.

    Curves are compared at the same fraction of the training run (epoch / epochs), from
    `min_progress` on, and only once `min_feasible` trials have reached the target. Before
    that (and always), a trial more than `hopeless` below the target from `min_progress` on
    is stopped too: with a one-cycle schedule a net at 30% of its run that is still 10
    points short does not close the gap (none did in the first MNIST study).
    """

    enabled: bool = True  # stop trials early
    margin: float = checked(0.02, ge=0.0, le=1.0)  # below the target-reaching trials' curves
    min_progress: float = 0.3  # the fraction of its epochs from which a trial may be stopped
    min_feasible: int = 2  # target-reaching trials needed before curves are compared
    hopeless: float = checked(0.1, gt=0.0, le=1.0)  # below the target from min_progress on: stopped


@dataclass(frozen=True)
class Fidelity:
    """Screen each sampled trial with a short run before its full training (`mincap.search.fidelity`).

    The screening run trains `epochs` epochs on the first `subset` train images (0: all)
    with the trial's own bit widths and no pruning; a trial is promoted to full training
    when its (bits, validation accuracy) point is in the best `promote` fraction, by Pareto
    rank, of the screened trials so far (once `min_peers` exist) and reaches `min_val_acc`.
    """

    enabled: bool = False  # screen the sampled trials (never the seeds)
    epochs: int = checked(2, ge=1)  # of the screening run
    subset: int = checked(0, ge=0)  # train images of the screening run; 0: the whole train split
    promote: float = checked(0.5, gt=0.0, le=1.0)  # the best fraction by Pareto rank goes on to full training
    min_peers: int = checked(4, ge=1)  # screened trials before any is stopped by rank
    min_val_acc: float = checked(0.0, ge=0.0, le=1.0)  # the screening accuracy a trial must reach


@dataclass(frozen=True)
class SeedRecipe:
    """How the seed presets are trained: each value must lie in the space (an enqueued trial is a
    point of it). Unset (0, or -1 for `augment`), `mincap.search.space.preset_params` takes the
    longest training, the smallest batch, the geometric middle lr, the lowest weight decay, the
    middle shift, the largest QAT fraction and 4 bits (clipped to the space)."""

    epochs: int = checked(0, note=_RECIPE.format("epochs"))  # the seeds' training epochs
    batch_size: int = checked(0, note="one of space.batch_size (0: unset)")  # the seeds' batch size
    lr: float = checked(0.0, note=_RECIPE.format("lr"))  # learning rate
    weight_decay: float = checked(0.0, note=_RECIPE.format("weight_decay"))  # weight decay
    augment: int = checked(-1, note="within space.augment (-1: unset)")  # pixels of random shift
    qat_fraction: float = checked(0.0, note=_RECIPE.format("qat_fraction"))  # of the epochs, quantization-aware
    bits: int = checked(0, note=_RECIPE.format("bits"))  # every layer's width


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
    oneshot: Oneshot = field(default_factory=Oneshot)
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


def _check_rules(cfg: StudyConfig) -> None:
    for name in _SECTIONS:
        part = getattr(cfg, name)
        for key, rule in rules(type(part)).items():
            value = getattr(part, key)
            for v in value if isinstance(value, tuple) else (value,):
                if not rule.accepts(v):
                    raise MincapError(f"{name}.{key}: must be {rule.text()}, got {v!r}")


def _validate(cfg: StudyConfig) -> None:
    s, sp = cfg.study, cfg.space

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise MincapError(msg)

    _check_rules(cfg)  # the fields' bounds and choices; below, what no bound can say
    try:  # a memorization set: validation is its training set, never a held-out part of it
        check_split(s.dataset, cfg.data.n_val, cfg.data.limit or None)
    except MincapError as err:
        need(False, f"data.n_val: {err}")
    for text in sp.paths:
        try:
            parse_steps(text) if text else None
        except MincapError as err:
            need(False, f"space.paths: {text!r}: {err}")
    need(sp.channels0 == (0, 0) or sp.channels0[0] >= 1, "space.channels0: widths must be >= 1 ([0, 0]: as channels)")
    need(sp.conv_depth[0] >= 1 or "cnn" not in sp.families, "space.conv_depth: a cnn needs >= 1 conv")
    check_oneshot(cfg.oneshot)
    # A one-shot study does not search [space]: its seeds are sub-networks of the supernet, and
    # [seed_recipe] is the from-scratch recipe of its replicates, not a point of [space].
    per_trial = not cfg.oneshot.enabled
    for name in s.seeds:
        preset, recipe, extras = seed_settings(name, cfg.seed_recipe)
        need(preset in PRESETS, f"study.seeds: unknown preset {preset!r}")
        if not per_trial:
            if cfg.oneshot.seeds:
                try:
                    preset_subnet(preset, cfg.oneshot, recipe.bits)
                except MincapError as err:
                    need(False, f"study.seeds: {err} ([oneshot] seeds = true)")
            continue
        _validate_seed_recipe(recipe, sp, need)
        if "path" in extras:
            need(0 <= extras["path"] < len(sp.paths), f"study.seeds: {name!r}: path is an index into space.paths "
                                                       f"(0..{len(sp.paths) - 1})")
        if "scales" in extras:
            need(extras["scales"] in sp.scales, f"study.seeds: {name!r}: scales must be one of space.scales")
    if per_trial:
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
