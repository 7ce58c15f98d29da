import subprocess
import sys

import mincap


def test_lazy_exports_resolve():
    for name in mincap.__all__:
        assert getattr(mincap, name) is not None


def test_import_is_light():
    code = "import sys, mincap; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False"
