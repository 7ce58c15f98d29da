"""bench/search_speed.py --first-99 stops on validation accuracy and never reads the test set
(issue 27 item 7: it used to read test accuracy after every epoch and stop on it)."""

import ast
import importlib.util
from pathlib import Path

from mincap import data
from mincap.data import registry
from mincap.evaluation import holdout

BENCH = Path(__file__).resolve().parents[2] / "bench" / "search_speed.py"
spec = importlib.util.spec_from_file_location("search_speed", BENCH)
search_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(search_speed)


def test_the_benchmark_imports_no_door_to_the_test_set():
    names = set()
    for node in ast.walk(ast.parse(BENCH.read_text())):
        if isinstance(node, ast.ImportFrom):
            names |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    assert not {n for n in names if "holdout" in n or n.endswith((".load_test", ".test_arrays"))}, names


def test_first_99_stops_on_validation_with_the_test_set_sealed(mnist_root, monkeypatch, capsys):
    reads = []
    real = registry._load_arrays
    monkeypatch.setattr(registry, "_load_arrays", lambda name, roots, train: reads.append(train) or
                        real.__wrapped__(name, roots, train))
    splits = data.load("mnist", root=mnist_root, limit=500, n_val=500)
    with holdout.sealed():  # any read of the test set raises here
        found = search_speed.first_99(splits, 3, target=0.0)
        never = search_speed.first_99(splits, 1, target=1.01)
    assert found["epoch"] == 1 and found["s"] > 0  # reached at once, and training stopped there
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"  tiny epoch 1: val {found['val']:.4f}" and "test" not in " ".join(printed)
    assert len(printed) == 2  # epoch 1 of the first run (stopped), epoch 1 of the second
    assert never is None
    assert False not in reads  # no test part read, not even from a cache miss
