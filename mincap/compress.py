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

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from mincap import quant
from mincap.artifact import CompactSide, LayerCodes, decode, encode
from mincap.config import CRITERIA, CompressConfig, TrainConfig
from mincap.data import Splits
from mincap.errors import MincapError
from mincap.models import Spec, build, prepare
from mincap.quant import QuantSpec, quant_layers, quantize_tensor, quantizer_of, set_fake_quant
from mincap.train import evaluate, init_model, train

__all__ = [
    "CRITERIA",
    "CompressConfig",
    "Compressed",
    "anneal_bits",
    "configured_shrink",
    "export",
    "prune_counts",
    "prune_structured",
    "qat_plan",
    "shrink",
    "train_compressed",
    "train_quantized",
]



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


def _depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1


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
    if ratio <= 0:
        return {}
    device = next(model.parameters()).device
    example = torch.zeros((2, *model.spec.in_shape), device=device)
    layers = quant_layers(model)
    # A depthwise conv's channels are its input's: pruning the layer before it prunes it too.
    hidden = [(i, m) for i, m in enumerate(layers[:-1]) if not _depthwise(m)]
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
    convs = iter(m for m in model.features if isinstance(m, nn.Conv2d))
    blocks = []
    for c in spec.convs:
        if c.separable:
            next(convs)  # the depthwise conv: its channels are the block's input channels
        blocks.append(replace(c, channels=next(convs).out_channels))
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    return replace(spec, convs=tuple(blocks), hidden=tuple(m.out_features for m in linears[:-1]))


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
            fold = (q is not None and q.symmetric and _depthwise(layer) and isinstance(nxt, nn.Conv2d)
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


def qat_plan(net: Spec | nn.Module, train_cfg: TrainConfig, comp: CompressConfig) -> tuple[list, int]:
    """What `train_compressed` trains with: `(QuantSpec | None per conv/linear layer, switch epoch)`.

    Fake quantization is on from epoch index `switch` = epochs - qat_epochs (from the start
    when that is <= 0). `net` is the spec or its built network; the tuple is also
    `mincap.batched.train_many`'s `quant=` entry for the trial.
    """
    n_layers = len(quant.quant_layers(build(net) if isinstance(net, Spec) else net))
    qspecs = [None if b is None else quant.QuantSpec(b, comp.per_channel, comp.symmetric, comp.quantizer)
              for b in comp.layer_bits(n_layers)]
    return qspecs, train_cfg.epochs - comp.qat_epochs


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
    if comp.path:  # the steps need a target to choose among: mincap.search.path_trial / mincap.path
        raise MincapError("train_compressed: a compression path (comp.path) runs through mincap.path.compression_path")
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
    if pretrained is None:
        model = init_model(spec, train_cfg.seed, device or "cpu")
    else:
        model, first = pretrained
        model = model.to(device or "cpu")
    qspecs, switch = qat_plan(model, train_cfg, comp)
    if pretrained is None:
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
