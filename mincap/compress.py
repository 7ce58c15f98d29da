"""Train a network for its honest size: QAT, structured pruning, sparsity, BN folding, artifact.

`train_compressed` runs, in this order:

1. `init_model(spec, seed)`, fake quantizers attached (disabled) to every conv/linear weight;
2. `mincap.train.train` with the `TrainConfig` schedule; the last `qat_epochs` epochs
   train with fake quantization on (the first epochs are float);
3. structured pruning with torch-pruning (`prune_ratio > 0`): `prune_steps` steps, each
   removing channels/neurons through the dependency graph (importance `prune_criterion`)
   then fine-tuning `prune_finetune_epochs` epochs (quantizers on) on a fresh one-cycle
   schedule at half the peak learning rate; the final layer's outputs are never pruned;
4. unstructured magnitude sparsity (`sparsity > 0`): the smallest weights of each layer are
   masked to zero and the network fine-tuned `prune_finetune_epochs` epochs with the mask;
5. export: integer codes from the (masked) latent weights with the same quantizer QAT used,
   batch norm folded into the per-channel scales and the biases, everything written to a
   `.mincap` artifact (`mincap.artifact`);
6. the artifact is decoded and the *decoded* network is what `Compressed.model` is and
   what `val_acc` measures (on `splits.val`; the test set is not touched here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from mincap.errors import MincapError

if TYPE_CHECKING:
    import torch.nn as nn

    from mincap.data import Splits
    from mincap.models import Spec
    from mincap.train import TrainConfig

__all__ = ["CRITERIA", "CompressConfig", "Compressed", "export", "prune_structured", "qat_plan",
           "train_compressed"]

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

    def __post_init__(self) -> None:
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


def prune_structured(model: nn.Module, ratio: float, criterion: str = "l1", *, splits: Splits | None = None,
                     seed: int = 0) -> None:
    """Remove `ratio` of the channels/neurons of every prunable group in place (torch-pruning).

    The model must carry no parametrizations (call `mincap.quant.detach_fake_quant` first).
    `taylor` needs `splits` (gradients of one training batch).
    """
    import torch
    import torch.nn.functional as F
    import torch_pruning as tp

    from mincap.models import prepare
    from mincap.quant import quant_layers

    if ratio <= 0:
        return
    device = next(model.parameters()).device
    shape = model.spec.in_shape
    example = torch.zeros((2, *shape), device=device)
    last = quant_layers(model)[-1]
    torch.manual_seed(seed)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=_importance(criterion), pruning_ratio=ratio, ignored_layers=[last],
    )
    if criterion == "taylor":
        if splits is None:
            raise MincapError("taylor pruning needs training data")
        x = prepare(splits.train.x[:512].to(device))
        model.zero_grad()
        F.cross_entropy(model(x), splits.train.y[:512].to(device)).backward()
    was_training = model.training
    model.eval()
    pruner.step()
    model.train(was_training)
    model.zero_grad(set_to_none=True)


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
    from torch.nn.utils import parametrize

    from mincap.artifact import CompactSide, LayerCodes, encode
    from mincap.quant import quant_layers, quantize_tensor, set_fake_quant

    spec = pruned_spec(model, spec)
    set_fake_quant(model, False)  # layer.weight is now the (masked) latent weight
    model.eval()
    mods = list(model.features) + list(model.classifier)
    layers = []
    with torch.no_grad():
        for layer in quant_layers(model):
            q = None
            if parametrize.is_parametrized(layer, "weight"):
                qs = [p.q for p in layer.parametrizations.weight if hasattr(p, "q")]
                q = qs[0] if qs else None
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
                codes, scale, zp = quantize_tensor(w, q)
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


def qat_plan(net: Spec | nn.Module, train_cfg: TrainConfig, comp: CompressConfig) -> tuple[list, int]:
    """What `train_compressed` trains with: `(QuantSpec | None per conv/linear layer, switch epoch)`.

    Fake quantization is on from epoch index `switch` = epochs - qat_epochs (from the start
    when that is <= 0). `net` is the spec or its built network; the tuple is also
    `mincap.batched.train_many`'s `quant=` entry for the trial.
    """
    from mincap import quant
    from mincap.models import Spec, build

    n_layers = len(quant.quant_layers(build(net) if isinstance(net, Spec) else net))
    qspecs = [None if b is None else quant.QuantSpec(b, comp.per_channel, comp.symmetric)
              for b in comp.layer_bits(n_layers)]
    return qspecs, train_cfg.epochs - comp.qat_epochs


def train_compressed(spec: Spec, splits: Splits, train_cfg: TrainConfig, comp: CompressConfig, *,
                     on_epoch=None, device=None, pretrained=None) -> Compressed:
    """init_model(spec, train_cfg.seed) -> train (float, then QAT for the last comp.qat_epochs) -> prune/fine-tune
    as configured -> fold BN -> encode artifact -> DECODE it -> evaluate decoded model on splits.val.

    `pretrained=(model, TrainResult)` skips the first two steps: `model` holds the latent
    weights that phase produced, without parametrizations -- what `mincap.batched.train_many`
    returns for `quant=qat_plan(spec, train_cfg, comp)`, which trains that phase for many
    trials at once. `train_time_s` then counts the pretrained phase's own time too.
    """
    from mincap import quant
    from mincap.artifact import decode
    from mincap.train import evaluate, init_model, train

    device = device or "cpu"
    t0 = time.perf_counter()
    if pretrained is None:
        model = init_model(spec, train_cfg.seed, device)
    else:
        model, first = pretrained
        model = model.to(device)
    qspecs, switch = qat_plan(model, train_cfg, comp)
    if pretrained is None:
        quant.attach_fake_quant(model, qspecs, enabled=switch <= 0)

        def on_epoch_start(epoch: int, m) -> None:
            quant.set_fake_quant(m, epoch >= switch)

        first = train(model, splits, train_cfg, on_epoch=on_epoch, on_epoch_start=on_epoch_start)
    else:
        quant.attach_fake_quant(model, qspecs, enabled=True)
        t0 -= first.train_time_s
    history = list(first.history)
    quant.set_fake_quant(model, True)
    ft_cfg = replace(train_cfg, epochs=comp.prune_finetune_epochs, lr=train_cfg.lr / 2)

    if comp.prune_ratio > 0:
        for k in range(1, comp.prune_steps + 1):
            # cumulative kept fraction after step k is 1 - ratio * k / steps
            keep_prev = 1 - comp.prune_ratio * (k - 1) / comp.prune_steps
            keep_now = 1 - comp.prune_ratio * k / comp.prune_steps
            specs = quant.detach_fake_quant(model)
            prune_structured(model, 1 - keep_now / keep_prev, comp.prune_criterion, splits=splits,
                             seed=train_cfg.seed + k)
            quant.attach_fake_quant(model, specs, enabled=True)
            if ft_cfg.epochs:
                history += train(model, splits, replace(ft_cfg, seed=train_cfg.seed + k), on_epoch=on_epoch).history
    if comp.sparsity > 0:
        specs = quant.detach_fake_quant(model)
        quant.attach_sparsity(model, comp.sparsity)
        quant.attach_fake_quant(model, specs, enabled=True)
        if ft_cfg.epochs:
            history += train(model, splits, replace(ft_cfg, seed=train_cfg.seed + 1000), on_epoch=on_epoch).history

    qat_val_acc, _ = evaluate(model, splits.val, batch_size=train_cfg.eval_batch_size)
    artifact = export(model, spec)
    dec = decode(artifact)
    decoded = dec.model.to(device)
    val_acc, _ = evaluate(decoded, splits.val, batch_size=train_cfg.eval_batch_size)
    return Compressed(
        artifact=artifact, model=decoded, spec=dec.spec, size=dec.size, val_acc=val_acc,
        history=history, train_time_s=time.perf_counter() - t0, qat_val_acc=qat_val_acc,
    )
