"""The package's shape: no import circles (TYPE_CHECKING imports count), modules of one concept
under a ceiling of ~500 lines, imports at the top."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "mincap"
MAX_LINES = 500  # a ceiling, not a target: a module holds one concept
# Function-local imports that stay lazy on purpose: the CLI (so `mincap --help` is instant) and
# scikit-learn, which only the `digits` rung needs and which costs ~1 s to import.
LAZY_OK = {"mincap/cli/study.py": None, "mincap/cli/train.py": None, "mincap/cli/info.py": None, "mincap/data/variants.py": {"sklearn.datasets"}}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imported(node: ast.AST, module: str, is_pkg: bool) -> list[str]:
    """mincap modules named by an import statement (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("mincap")]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = module.split(".") if is_pkg else module.split(".")[:-1]
            base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
        if not base.startswith("mincap"):
            return []
        return [base] + [f"{base}.{a.name}" for a in node.names]
    return []


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def _top_level_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        deps: set[str] = set()
        # Module level, TYPE_CHECKING blocks included: a type-only import that closes a circle
        # still couples the two modules, and a checker running them in the other order fails.
        for node in tree.body:
            for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
                deps.update(d for d in _imported(sub, name, path.name == "__init__.py") if d in mods)
        # Importing mincap.a.b runs the package mincap.a's __init__ first, with what it imports:
        # that edge closes circles too (mincap.oneshot.trial -> mincap.search.objective ran
        # mincap.search's __init__, which imports the one-shot run, which imports the trial).
        deps |= {parent for d in deps for parent in _parents(d) if parent in mods and not name.startswith(parent + ".")
                 and parent != name}
        deps.discard(name)
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            # A package's own submodules import through it; that edge is not a circle.
            if n.startswith(d + "."):
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_circles():
    assert _cycle(_top_level_graph()) is None


def test_type_checking_imports_count(tmp_path, monkeypatch):
    """A circle closed only under `if TYPE_CHECKING:` is still found."""
    pkg = tmp_path / "mincap"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from mincap.b import B\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mincap.a import A\nB = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    assert _cycle(_top_level_graph()) == ["mincap.a", "mincap.b", "mincap.a"]


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG.parent)))
def test_module_is_small(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_imports_are_at_the_top():
    """Function-local imports only where laziness is the point (LAZY_OK)."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG.parent))
        allowed = LAZY_OK.get(rel, set())
        if rel in LAZY_OK and allowed is None:
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                    if not set(names) <= allowed:
                        found.append(f"{rel}:{node.lineno} {', '.join(n or '.' for n in names)}")
    assert not found, "function-local imports:\n" + "\n".join(found)


def test_help_imports_nothing_heavy():
    """`mincap --help` stays instant: building the parser imports no torch, numpy, optuna or matplotlib."""
    code = ("import sys, mincap.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'optuna', 'matplotlib') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_only_holdout_opens_the_test_door():
    """The test set has one door: `registry.test_door` is opened by mincap.evaluation.holdout only,
    and the registry's `load_arrays(..., False)` refuses anyone else (tests/evaluation/test_holdout.py)."""
    users = sorted(str(p.relative_to(PKG.parent)) for p in PKG.rglob("*.py") if "test_door" in p.read_text())
    assert users == ["mincap/data/registry.py", "mincap/evaluation/holdout.py"]
