import importlib
import subprocess
import sys

import pytest

import mincap


def test_lazy_exports_resolve_to_their_modules():
    """Each public name is the very object its module defines, and a class or a function (or PRESETS)."""
    for name in mincap.__all__:
        if name == "__version__":
            assert isinstance(mincap.__version__, str)
            continue
        module = importlib.import_module(mincap._EXPORTS[name])
        obj = getattr(mincap, name)
        assert obj is getattr(module, name), name
        assert isinstance(obj, type) or callable(obj) or (name == "PRESETS" and isinstance(obj, dict)), name


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mincap.nope  # noqa: B018


def test_import_is_light():
    code = "import sys, mincap; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize("pkg", ["mincap.entropy", "mincap.results"])
def test_lazy_names_are_never_shadowed_by_submodules(pkg):
    """A lazy name equal to a submodule's name resolves to the module once that is imported."""
    import pkgutil
    import types

    package = importlib.import_module(pkg)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{pkg}.{info.name}")  # binds every submodule name on the package
    for name in package.__all__:
        assert not isinstance(getattr(package, name), types.ModuleType), f"{pkg}.{name} is a module"
