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
