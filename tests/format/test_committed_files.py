"""Every committed `.mincap` file still decodes to the very network it decoded to when it was written.

`tests/golden/decoded.json` holds, per committed file, a hash of the decoded spec and every decoded
tensor (`_digest`), recorded before the package moved into `mincap.format` (2026-12-06) and
unchanged since: a decoder change that alters one weight of one old file fails here. A new file is
added to the golden record with `python tests/format/test_committed_files.py --update`.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from mincap.format import container

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "decoded.json"


def _committed() -> list[str]:
    out = subprocess.run(["git", "ls-files", "studies"], capture_output=True, text=True, cwd=REPO, check=True)
    return sorted(f for f in out.stdout.split() if f.endswith(".mincap") or ".artifacts/" in f)


def _digest(data: bytes) -> str:
    d = container.decode(data)
    h = hashlib.sha256(d.spec.to_json().encode())
    for k, v in d.model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def test_every_committed_file_decodes_as_it_did():
    golden = json.loads(GOLDEN.read_text())
    files = _committed()
    assert len(files) > 1000  # the studies' artifacts, not an empty listing
    missing = [f for f in files if f not in golden]
    assert not missing, f"not in the golden record (run this file with --update): {missing[:3]}"
    changed = [f for f in files if _digest((REPO / f).read_bytes()) != golden[f]]
    assert not changed, f"{len(changed)} committed files decode differently now: {changed[:3]}"


def test_the_digest_sees_one_changed_weight():
    f = next(f for f in _committed() if f.endswith(".mincap"))
    d = container.decode((REPO / f).read_bytes())
    layer = d.layers[0]
    codes = layer.codes.copy().reshape(-1)
    codes[0] = codes[0] + 1 if codes[0] < 0 else codes[0] - 1
    other = container.encode(d.spec, [type(layer)(**{**layer.__dict__, "codes": codes.reshape(layer.codes.shape)}),
                                      *d.layers[1:]])
    assert _digest(other) != _digest((REPO / f).read_bytes())


if __name__ == "__main__" and "--update" in sys.argv:
    old = json.loads(GOLDEN.read_text())
    new = {f: old.get(f) or _digest((REPO / f).read_bytes()) for f in _committed()}
    GOLDEN.write_text(json.dumps(new, indent=0, sort_keys=True) + "\n")
    print(f"{len(new)} files, {len(new) - len(old.keys() & new.keys())} added")
