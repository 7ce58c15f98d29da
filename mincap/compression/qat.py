"""Train a network for its honest size: QAT, structured pruning, sparsity, BN folding, artifact.

`train_compressed` runs, in this order:

1. `init_model(spec, seed)`, fake quantizers attached (disabled) to every conv/linear weight;
2. `mincap.training.engine.train` with the `TrainConfig` schedule; the last `qat_epochs` epochs
   train with fake quantization on (the first epochs are float). The quantizer is
   `quantizer` (`max`, `mse` or `lsq`, see `mincap.nets.quant`); with `anneal_epochs > 0`
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
   `.mincap` artifact (`mincap.format.container`);
6. the artifact is decoded and the *decoded* network is what `Compressed.model` is and
   what `val_acc` measures (on `splits.val`; the test set is not touched here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch.nn as nn

from mincap.compression.prune import prune_structured
from mincap.config import CRITERIA, CompressConfig, TrainConfig
from mincap.data import Splits
from mincap.errors import MincapError
from mincap.format.container import decode
from mincap.format.writer import export
from mincap.nets import quant
from mincap.nets.models import Spec, build
from mincap.training.engine import evaluate, init_model, train

__all__ = [
    "CRITERIA",
    "CompressConfig",
    "Compressed",
    "anneal_bits",
    "configured_shrink",
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


















def qat_plan(net: Spec | nn.Module, train_cfg: TrainConfig, comp: CompressConfig) -> tuple[list, int]:
    """What `train_compressed` trains with: `(QuantSpec | None per conv/linear layer, switch epoch)`.

    Fake quantization is on from epoch index `switch` = epochs - qat_epochs (from the start
    when that is <= 0). `net` is the spec or its built network; the tuple is also
    `mincap.training.batched.train_many`'s `quant=` entry for the trial.
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
    weights that phase produced, without parametrizations -- what `mincap.training.batched.train_many`
    returns for `quant=qat_plan(spec, train_cfg, comp)`, which trains that phase for many
    trials at once. `train_time_s` then counts the pretrained phase's own time too.
    `teacher` (a module, see `mincap.training.distill`) adds soft targets to every training phase
    when `train_cfg.distill_weight > 0`.
    """
    if comp.path:  # the steps need a target to choose among: mincap.search.path_trial / mincap.compression.path
        raise MincapError("train_compressed: a compression path (comp.path) runs through mincap.compression.path.compression_path")
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
