"""What a `.mincap` file is worth: decode it with the fixed decoder and measure the network it holds.

`verify_file` reads and decodes the artifact (a damaged file is one line, exit 2), checks
that the network fits the dataset (input shape and class count: a network measured on the
wrong data gives a wrong number with exit 0 otherwise), and evaluates the decoded network on
the validation split the studies use (`n_val`, `split_seed` default to theirs) and on the
test set, reported as it comes. Its size is the file's: `artifact_bits` = 8 x its length. Its
two-part code (`mincap.evaluation.twopart`: the file plus the official training labels coded with the
network) is reported too, so a file made outside a study can be placed on the ladder figure.
"""

from __future__ import annotations

from mincap import data
from mincap.config import DEFAULT_N_VAL, DEFAULT_SPLIT_SEED
from mincap.errors import MincapError
from mincap.evaluation.holdout import final_test_accuracy
from mincap.evaluation.twopart import two_part_of
from mincap.format import container as artifact
from mincap.training import engine as train

__all__ = ["verify_file"]


def _datasets_like(in_shape: tuple[int, ...], n_classes: int, root) -> list[str]:
    """Registered datasets whose images and classes fit a network (those whose files are here)."""
    fits = []
    for name in sorted(data.DATASETS):
        try:
            x, _ = data.load_arrays(name, root, True)  # shapes only: the training part, never test
        except MincapError:
            continue  # not on this machine
        if tuple(x.shape[1:]) == tuple(in_shape) and data.DATASETS[name].n_classes == n_classes:
            fits.append(name)
    return fits


def verify_file(path: str, *, dataset: str = "mnist", data_dir: str | None = None, n_val: int = DEFAULT_N_VAL,
                split_seed: int = DEFAULT_SPLIT_SEED, test: bool = True) -> dict:
    """The artifact's size table plus its decoded network's validation and test accuracy on `dataset`.

    `test=False` reads no test image (no `test_acc` key): checking a file while still choosing."""
    dec = artifact.decode(artifact.read(path))
    splits = data.load(dataset, root=data_dir, n_val=n_val, split_seed=split_seed)
    shape, classes = tuple(dec.spec.in_shape), dec.spec.n_classes
    if tuple(splits.in_shape) != shape or splits.n_classes != classes:
        fits = _datasets_like(shape, classes, data_dir)
        hint = f"name it with --dataset ({', '.join(fits)})" if fits else "name its dataset with --dataset"
        raise MincapError(f"{path}: the network takes {'x'.join(map(str, shape))} inputs and {classes} classes, "
                          f"{dataset} has {'x'.join(map(str, splits.in_shape))} and {splits.n_classes}: {hint}")
    val_acc, _ = train.evaluate(dec.model, splits.val)
    out = {"file": path, "dataset": dataset, "spec": dec.spec.to_dict(), "n_val": len(splits.val),
           "split_seed": split_seed, "val_acc": val_acc}
    if test:
        out["test_acc"] = final_test_accuracy(dec.model, dataset, root=data_dir)[0]
    out.update(dec.size)
    if splits.memorization:  # val_acc is accuracy on the images trained on
        out["memorization"] = data.memorization_note(dataset)
    # The two-part code (mincap.evaluation.twopart) on the official training labels: train and validation
    # splits together, the labels the prequential codes send.
    out["two_part"] = two_part_of(dec.model, dec.size["artifact_bits"], dataset, data_dir=data_dir)
    return out
