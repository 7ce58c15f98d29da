"""Train a network for its honest size: QAT, structured pruning, sparsity, BN folding, artifact.

`train_compressed` runs, in this order:

1. `init_model(spec, seed)`, fake quantizers attached (disabled) to every conv/linear weight;
2. `mincap.train.train` with the `TrainConfig` schedule; the last `qat_epochs` epochs
   train with fake quantization on (the first epochs are float). The quantizer is
   `quantizer` (`max`, `mse` or `lsq`, see `mincap.quant`); with `anneal_epochs > 0`
   the first QAT epochs step the width down from 8 bits to the target (a gradual switch);
3. structured pruning with torch-pruning's dependency graph (`prune_ratio > 0`):
   `prune_steps` steps, each removing channels/neurons (importance `prune_criterion`)
   then fine-tuning `prune_finetune_epochs` epochs (quantizers on) on a fresh one-cycle
   schedule at half the peak learning rate. The channel counts are computed here, not by
   torch-pruning (whose `n - int(n * (1 - r))` removed at least one channel from every
   layer for any ratio > 0): a layer loses floor(n * r) channels, so an amount that
   rounds to zero removes none; `prune_global` ranks channels across layers instead
   (the same total), and every layer keeps `prune_min_channels`; the class outputs
   are never pruned; the channels removed per layer are recorded per step;
4. unstructured magnitude sparsity (`sparsity > 0`): the smallest weights of each layer are
   masked to zero and the network fine-tuned `prune_finetune_epochs` epochs with the mask;
5. export: integer codes from the (masked) latent weights with the same quantizer QAT used,
   batch norm folded into the per-channel scales and the biases, everything written to a
   `.mincap` artifact (`mincap.artifact`);
6. the artifact is decoded and the *decoded* network is what `Compressed.model` is and
   what `val_acc` measures (on `splits.val`; the test set is not touched here).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from mincap.errors import MincapError

if TYPE_CHECKING:
    import torch.nn as nn

    from mincap.data import Splits
    from mincap.models import Spec
    from mincap.train import TrainConfig

__all__ = [
    "CRITERIA",
    "CompressConfig",
    "Compressed",
    "anneal_bits",
    "configured_shrink",
    "export",
    "prune_counts",
    "prune_structured",
    "shrink",
    "train_compressed",
    "train_quantized",
]

CRITERIA = ("l1", "l2", "taylor", "random", "bn", "fpgm", "lamp")


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
    quantizer: str = "max"  # max (max|w| scales, what mincap.batched trains), mse or lsq (mincap.quant)
    anneal_epochs: int = 0  # first QAT epochs at widths stepping down from 8 bits to the target
    prune_global: bool = False  # rank channels across layers (torch-pruning's global pruning) instead of per layer
    prune_min_channels: int = 1  # every pruned layer keeps at least this many channels/neurons

    def __post_init__(self) -> None:
        from mincap.quant import METHODS

        if self.quantizer not in METHODS:
            raise MincapError(f"quantizer must be one of {', '.join(METHODS)}, got {self.quantizer!r}")
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

    def quant_specs(self, n_layers: int) -> list:
        """One `QuantSpec` (None: float) per conv/linear layer."""
        from mincap.quant import QuantSpec

        return [None if b is None else QuantSpec(b, self.per_channel, self.symmetric, self.quantizer)
                for b in self.layer_bits(n_layers)]


def anneal_bits(target: int, qat_epoch: int, anneal_epochs: int) -> int:
    """Width during QAT epoch `qat_epoch` (0-based): linear from 8 toward `target` over
    `anneal_epochs` epochs, then `target` (e.g. target 2, 2 epochs: 6, 4, then 2)."""
    if qat_epoch >= anneal_epochs or target >= 8:
        return target
    return max(target, round(8 - (8 - target) * (qat_epoch + 1) / (anneal_epochs + 1)))


@dataclass
class Compressed:
    artifact: bytes  # the .mincap file content
    model: nn.Module  # the network DECODED from `artifact` (what gets evaluated)
    spec: Spec  # final spec (after pruning; as stored in the artifact)
    size: dict  # n_params, n_nonzero, nominal_bits, artifact_bits, layers=[per-layer breakdown dicts]
    val_acc: float  # accuracy of the decoded model on splits.val
    history: list = field(default_factory=list)  # EpochStats of all training phases
    train_time_s: float = 0.0
    qat_val_acc: float | None = None  # accuracy of the in-memory (fake-quantized, unfolded) model
    pruned: list = field(default_factory=list)  # per pruning step: {quant-layer index: channels removed}


def _importance(name: str):
    import torch_pruning as tp

    return {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "random": lambda: tp.importance.RandomImportance(),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "fpgm": lambda: tp.importance.FPGMImportance(),
        "lamp": lambda: tp.importance.LAMPImportance(),
    }[name]()


def prune_counts(widths: list[int], ratio: float, min_channels: int = 1) -> list[int]:
    """Channels to remove per layer: floor(n * ratio), never below `min_channels` left.

    floor, not torch-pruning's `n - int(n * (1 - ratio))` (which is >= 1 for any
    ratio > 0): an amount that rounds to zero channels removes none.
    """
    return [max(0, min(math.floor(n * ratio + 1e-9), n - min_channels)) for n in widths]


def prune_structured(model: nn.Module, ratio: float, criterion: str = "l1", *, splits: Splits | None = None,
                     seed: int = 0, global_rank: bool = False, min_channels: int = 1) -> dict[int, int]:
    """Remove channels/neurons in place through torch-pruning's dependency graph.

    Per layer (default): floor(n * ratio) of each hidden layer's n outputs, lowest
    importance first. `global_rank`: floor(ratio * all hidden outputs) in all, the
    lowest-ranked across layers (torch-pruning's importances are mean-normalized per
    group, so they compare across layers), each layer keeping `min_channels`. The
    last layer's outputs (the classes) are never pruned. Returns {quant-layer index:
    channels removed} for the layers that lost any. The model must carry no
    parametrizations (`mincap.quant.detach_quantizers` first); `taylor` needs `splits`.
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch_pruning as tp

    from mincap.models import prepare
    from mincap.quant import quant_layers

    if ratio <= 0:
        return {}
    device = next(model.parameters()).device
    example = torch.zeros((2, *model.spec.in_shape), device=device)
    layers = quant_layers(model)
    hidden = list(enumerate(layers[:-1]))
    widths = [m.weight.shape[0] for _, m in hidden]
    torch.manual_seed(seed)
    if criterion == "taylor":
        if splits is None:
            raise MincapError("taylor pruning needs training data")
        x = prepare(splits.train.x[:512].to(device))
        model.zero_grad()
        F.cross_entropy(model(x), splits.train.y[:512].to(device)).backward()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    imp = _importance(criterion)

    def fn(m):
        return tp.prune_conv_out_channels if isinstance(m, nn.Conv2d) else tp.prune_linear_out_channels

    scores = []
    for (_, m), n in zip(hidden, widths):
        group = graph.get_pruning_group(m, fn(m), idxs=list(range(n)))
        s = imp(group)
        scores.append(torch.zeros(n) if s is None else s.detach().float().cpu().reshape(-1))
    if global_rank:
        total = math.floor(sum(widths) * ratio + 1e-9)
        flat = sorted((float(v), j, c) for j, s in enumerate(scores) for c, v in enumerate(s.tolist()))
        chosen: list[list[int]] = [[] for _ in hidden]
        for _, j, c in flat:
            if total <= 0:
                break
            if widths[j] - len(chosen[j]) > min_channels:
                chosen[j].append(c)
                total -= 1
    else:
        counts = prune_counts(widths, ratio, min_channels)
        chosen = [s.argsort()[:k].tolist() for s, k in zip(scores, counts)]
    removed = {}
    was_training = model.training
    model.eval()
    for (i, m), idxs in zip(hidden, chosen):
        if idxs:
            group = graph.get_pruning_group(m, fn(m), idxs=sorted(idxs))
            group.prune()
            removed[i] = len(idxs)
    model.train(was_training)
    model.zero_grad(set_to_none=True)
    return removed


def pruned_spec(model: nn.Module, spec: Spec) -> Spec:
    """`spec` with the channel and hidden widths `model` has now."""
    import torch.nn as nn

    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    return replace(
        spec,
        convs=tuple(replace(c, channels=m.out_channels) for c, m in zip(spec.convs, convs)),
        hidden=tuple(m.out_features for m in linears[:-1]),
    )


def export(model: nn.Module, spec: Spec) -> bytes:
    """The `.mincap` bytes of a trained `model` (fake quantizers attached or not; BN folded here)."""
    import numpy as np
    import torch
    import torch.nn as nn

    from mincap.artifact import CompactSide, LayerCodes, encode
    from mincap.quant import QuantSpec, quant_layers, quantize_tensor, quantizer_of, set_fake_quant

    spec = pruned_spec(model, spec)
    set_fake_quant(model, False)  # layer.weight is now the (masked) latent weight
    model.eval()
    mods = list(model.features) + list(model.classifier)
    layers = []
    with torch.no_grad():
        for layer in quant_layers(model):
            fq = quantizer_of(layer)
            q = None if fq is None else QuantSpec(fq.bits, fq.q.per_channel, fq.q.symmetric, fq.q.method)
            learned = fq.scale(layer.weight.detach()).float().cpu() if q is not None and q.method == "lsq" else None
            w = layer.weight.detach().float().cpu()
            n_out = w.shape[0]
            bias = layer.bias.detach().float().cpu() if layer.bias is not None else torch.zeros(n_out)
            gain = torch.ones(n_out)
            idx = mods.index(layer)
            if idx + 1 < len(mods) and isinstance(mods[idx + 1], nn.BatchNorm2d):
                bn = mods[idx + 1]
                gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().float().cpu()
                bias = bn.bias.detach().float().cpu() + (bias - bn.running_mean.detach().float().cpu()) * gain
            shape = (-1,) + (1,) * (w.dim() - 1)
            if q is None:
                lay = LayerCodes(0, weight=(w * gain.reshape(shape)).numpy(), bias=bias.numpy())
            else:
                codes, scale, zp = quantize_tensor(w, q, learned)
                per_channel = q.per_channel or bool((gain != 1).any())
                if per_channel:
                    scale, zp = scale.expand(n_out) * gain, zp.expand(n_out)
                if per_channel and q.symmetric:  # 8-bit scales/biases; a negative gain flips the codes
                    sign = torch.where(scale < 0, -1, 1).reshape(shape)
                    side = CompactSide.from_float(scale.abs().numpy(), bias.numpy())
                    layers.append(LayerCodes(q.bits, codes=(codes * sign).numpy(), side=side))
                    continue
                lay = LayerCodes(
                    q.bits, codes=codes.numpy(), scale=scale.numpy().astype(np.float16),
                    zero_point=zp.numpy().astype(np.uint8), bias=bias.numpy().astype(np.float16),
                    per_channel=per_channel, symmetric=q.symmetric,
                )
            layers.append(lay)
    set_fake_quant(model, True)
    return encode(replace(spec, batch_norm=False, dropout=0.0), layers)


def train_compressed(spec: Spec, splits: Splits, train_cfg: TrainConfig, comp: CompressConfig, *,
                     on_epoch=None, device=None, pretrained=None, teacher=None) -> Compressed:
    """init_model(spec, train_cfg.seed) -> train (float, then QAT for the last comp.qat_epochs) -> prune/fine-tune
    as configured -> fold BN -> encode artifact -> DECODE it -> evaluate decoded model on splits.val.

    `pretrained=(model, TrainResult)` skips the first two steps: `model` holds the latent
    weights that phase produced, without parametrizations -- what `mincap.batched.train_many`
    returns for `quant=qat_plan(spec, train_cfg, comp)`, which trains that phase for many
    trials at once. `train_time_s` then counts the pretrained phase's own time too.
    `teacher` (a module, see `mincap.distill`) adds soft targets to every training phase
    when `train_cfg.distill_weight > 0`.
    """
    from mincap.artifact import decode
    from mincap.train import evaluate

    device = device or "cpu"
    t0 = time.perf_counter()
    model, history, first_time = train_quantized(spec, splits, train_cfg, comp, on_epoch=on_epoch, device=device,
                                                 pretrained=pretrained, teacher=teacher)
    t0 -= first_time if pretrained is not None else 0.0
    pruned = configured_shrink(model, splits, train_cfg, comp, history=history, on_epoch=on_epoch, teacher=teacher)
    qat_val_acc, _ = evaluate(model, splits.val, batch_size=train_cfg.eval_batch_size)
    artifact = export(model, spec)
    dec = decode(artifact)
    decoded = dec.model.to(device)
    val_acc, _ = evaluate(decoded, splits.val, batch_size=train_cfg.eval_batch_size)
    return Compressed(
        artifact=artifact, model=decoded, spec=dec.spec, size=dec.size, val_acc=val_acc,
        history=history, train_time_s=time.perf_counter() - t0, qat_val_acc=qat_val_acc, pruned=pruned,
    )


def configured_shrink(model: nn.Module, splits: Splits, train_cfg: TrainConfig, comp: CompressConfig, *,
                      history: list, on_epoch=None, teacher=None) -> list[dict[int, int]]:
    """`comp`'s pruning steps and sparsity on a trained, quantized `model`, in place.
    Returns the channels removed per layer at each pruning step."""
    pruned = []
    for k in range(1, comp.prune_steps + 1 if comp.prune_ratio > 0 else 1):
        # cumulative kept fraction after step k is 1 - ratio * k / steps
        keep_prev = 1 - comp.prune_ratio * (k - 1) / comp.prune_steps
        keep_now = 1 - comp.prune_ratio * k / comp.prune_steps
        pruned.append(shrink(model, splits, train_cfg, comp, prune=1 - keep_now / keep_prev, seed=train_cfg.seed + k,
                             history=history, on_epoch=on_epoch, teacher=teacher))
    if comp.sparsity > 0:
        shrink(model, splits, train_cfg, comp, sparsity=comp.sparsity, seed=train_cfg.seed + 1000, history=history,
               on_epoch=on_epoch, teacher=teacher)
    return pruned


def train_quantized(spec: Spec, splits: Splits, train_cfg: TrainConfig, comp: CompressConfig, *, on_epoch=None,
                    device=None, pretrained=None, teacher=None):
    """The training phase: float epochs, then QAT (annealed as configured). Returns
    (model with quantizers on at their target widths, EpochStats history, train time s)."""
    from mincap import quant
    from mincap.train import init_model, train

    if pretrained is None:
        model = init_model(spec, train_cfg.seed, device or "cpu")
    else:
        model, first = pretrained
        model = model.to(device or "cpu")
    qspecs = comp.quant_specs(len(quant.quant_layers(model)))
    if pretrained is None:
        switch = train_cfg.epochs - comp.qat_epochs
        quant.attach_fake_quant(model, qspecs, enabled=switch <= 0)

        def on_epoch_start(epoch: int, m) -> None:
            quant.set_fake_quant_bits(m, lambda q: anneal_bits(q.bits, epoch - switch, comp.anneal_epochs))
            quant.set_fake_quant(m, epoch >= switch)

        first = train(model, splits, train_cfg, on_epoch=on_epoch, on_epoch_start=on_epoch_start, teacher=teacher)
    else:
        quant.attach_fake_quant(model, qspecs, enabled=True)
    quant.set_fake_quant_bits(model, lambda q: q.bits)
    quant.set_fake_quant(model, True)
    return model, list(first.history), first.train_time_s


def shrink(model: nn.Module, splits: Splits, train_cfg: TrainConfig, comp: CompressConfig, *, prune: float = 0.0,
           sparsity: float = 0.0, bits: dict | None = None, seed: int = 0, history: list | None = None,
           on_epoch=None, teacher=None) -> dict[int, int]:
    """One compression step on a quantized `model`, in place: remove the `prune` fraction of
    channels (per `comp`'s pruning settings), mask weights to `sparsity` (cumulative, per
    layer), lower widths (`bits`: {quant-layer index: new width}), then fine-tune
    `comp.prune_finetune_epochs` epochs at half the peak learning rate. Returns the
    channels removed per layer."""
    from mincap import quant
    from mincap.train import train

    fqs = quant.detach_quantizers(model)  # learned steps kept; masks dropped (re-derived below)
    removed = {}
    if prune > 0:
        removed = prune_structured(model, prune, comp.prune_criterion, splits=splits, seed=seed,
                                   global_rank=comp.prune_global, min_channels=comp.prune_min_channels)
    level = max(sparsity, getattr(model, "_mincap_sparsity", 0.0))
    if level > 0:
        quant.attach_sparsity(model, level)
        model._mincap_sparsity = level
    for i, b in (bits or {}).items():
        if fqs[i] is not None:
            fqs[i].q = replace(fqs[i].q, bits=b)
    quant.attach_fake_quant(model, fqs, enabled=True)
    quant.set_fake_quant_bits(model, lambda q: q.bits)
    ft_cfg = replace(train_cfg, epochs=comp.prune_finetune_epochs, lr=train_cfg.lr / 2, seed=seed)
    if ft_cfg.epochs:
        res = train(model, splits, ft_cfg, on_epoch=on_epoch, teacher=teacher)
        if history is not None:
            history += res.history
    return removed
