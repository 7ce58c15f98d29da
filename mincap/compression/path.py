"""A compression path: one training run, then a size/accuracy curve instead of one point.

`compression_path` trains a network once (`mincap.compression.qat.train_quantized`: float,
then QAT), applies the `CompressConfig`'s own pruning and sparsity, and records
that as step 0. Then it shrinks the network step by step -- remove channels
(`prune=R`, a fraction of each layer's current channels, floor per layer), raise
unstructured sparsity (`sparsity=S`, cumulative), lower bit widths (`bits=B`: every
quantized layer wider than B goes to B; `bits=B1:B2:...`: one width per
conv/linear layer) -- fine-tuning `comp.prune_finetune_epochs` epochs after each
step. `side=B` stores the symmetric layers' biases and scale exponents at B bits
from that step on (`CompactSide.from_float`; a step of `side=B` alone trains
nothing: the same weights, exported again). At every step the network is exported
to a `.mincap` artifact, the artifact is DECODED, and the decoded network is
evaluated on the validation split; the step's (artifact bits, validation accuracy)
and its bytes are kept.

`PathResult.chosen` is the smallest step (fewest artifact bits) whose validation
accuracy reaches the target. Steps are cumulative, so later steps are usually but
not necessarily smaller; the choice looks at all of them. The test set is not read.

Step grammar (CLI `--path`): steps separated by ';', the changes of one step by ',':
`"sparsity=0.3;sparsity=0.5;prune=0.2,bits=2"`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mincap.compression.qat import configured_shrink, shrink, train_quantized
from mincap.config import CompressConfig, TrainConfig, parse_steps
from mincap.data import Splits
from mincap.errors import MincapError
from mincap.evaluation.selection import smallest_reaching
from mincap.format.container import decode
from mincap.format.writer import export
from mincap.nets.models import Spec
from mincap.nets.quant import quant_layers, quantizer_of
from mincap.training.engine import evaluate

__all__ = ["PathResult", "PathStep", "compression_path", "parse_steps"]


@dataclass
class PathStep:
    """One point of the path: what was done, and the decoded artifact's size and accuracy."""

    index: int
    description: str
    artifact_bits: int
    val_acc: float  # of the network decoded from `artifact`, on the validation split
    artifact: bytes
    layer_bits: list  # width per conv/linear layer (0: float)
    removed: dict = field(default_factory=dict)  # {layer index: channels removed at this step}
    sparsity: float = 0.0  # cumulative unstructured sparsity after this step
    n_params: int = 0
    n_nonzero: int = 0
    time_s: float = 0.0  # fine-tuning + export + evaluation time of this step
    side_bits: int = 8  # width of the biases and scale exponents in `artifact`

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "artifact"}


@dataclass
class PathResult:
    steps: list[PathStep]
    target: float | None
    history: list = field(default_factory=list)  # EpochStats of every training phase
    train_time_s: float = 0.0

    @property
    def chosen(self) -> PathStep | None:
        """The smallest step reaching the target on validation (None: none does, or no target)."""
        if self.target is None:
            return None
        return smallest_reaching(self.steps, self.target, bits=lambda s: s.artifact_bits,
                                 val_acc=lambda s: s.val_acc, order=lambda s: s.index)


def _describe(step: dict) -> str:
    return ", ".join(f"{k}={':'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in step.items())


def compression_path(spec: Spec, splits: Splits, train_cfg: TrainConfig, comp: CompressConfig, *,
                     steps: list[dict] | str, target: float | None = None, on_epoch=None, device=None,
                     teacher=None, pretrained=None, stop_below: float | None = None) -> PathResult:
    """Train once, then shrink step by step; every step exported, decoded and evaluated on validation.

    `stop_below`: end the path after the first step (the trained network included) whose
    validation accuracy is below it (the steps are cumulative, so later ones only shrink
    further; a search saves their time).
    """
    if isinstance(steps, str):
        steps = parse_steps(steps)
    device = device or "cpu"
    t0 = time.perf_counter()
    model, history, first_time = train_quantized(spec, splits, train_cfg, comp, on_epoch=on_epoch, device=device,
                                                 pretrained=pretrained, teacher=teacher)
    pruned = configured_shrink(model, splits, train_cfg, comp, history=history, on_epoch=on_epoch, teacher=teacher)
    removed0: dict = {}
    for r in pruned:
        for i, n in r.items():
            removed0[i] = removed0.get(i, 0) + n
    sparsity = comp.sparsity

    side_bits = 8

    def record(index: int, desc: str, removed: dict, t_step: float) -> PathStep:
        data = export(model, spec, side_bits)
        dec = decode(data)
        acc, _ = evaluate(dec.model.to(device), splits.val, batch_size=train_cfg.eval_batch_size)
        widths = [0 if (fq := quantizer_of(m)) is None else fq.bits for m in quant_layers(model)]
        return PathStep(index, desc, dec.size["artifact_bits"], acc, data, widths, removed, sparsity,
                        dec.size["n_params"], dec.size["n_nonzero"], round(time.perf_counter() - t_step, 3),
                        side_bits)

    out = [record(0, "trained" + (" + configured pruning/sparsity" if comp.prune_ratio or comp.sparsity else ""),
                  removed0, time.perf_counter())]
    n_layers = len(quant_layers(model))
    for k, step in enumerate(steps, start=1):
        if stop_below is not None and out[-1].val_acc < stop_below:
            break
        ts = time.perf_counter()
        bits = None
        if "bits" in step:
            b = step["bits"]
            if len(b) == 1:
                bits = {i: min(b[0], fq.q.bits) for i, m in enumerate(quant_layers(model))
                        if (fq := quantizer_of(m)) is not None}
            elif len(b) == n_layers:
                bits = dict(enumerate(b))
            else:
                raise MincapError(f"--path: bits={':'.join(map(str, b))} has {len(b)} widths for {n_layers} layers")
        side_bits = step.get("side", side_bits)
        if set(step) == {"side"}:  # a new width for the side information only: nothing to fine-tune
            out.append(record(k, _describe(step), {}, ts))
            continue
        sparsity = max(sparsity, step.get("sparsity", 0.0))
        removed = shrink(model, splits, train_cfg, comp, prune=step.get("prune", 0.0), sparsity=sparsity, bits=bits,
                         seed=train_cfg.seed + 2000 + k, history=history, on_epoch=on_epoch, teacher=teacher)
        out.append(record(k, _describe(step), removed, ts))
    elapsed = time.perf_counter() - t0 + (first_time if pretrained is not None else 0.0)
    return PathResult(out, target, history, elapsed)
