#!/usr/bin/env bash
# The prepared GPU check: device name, seconds per epoch of sep-1.8k (one at a time; batched where
# the engine trains it), trials per hour of the default study over 5 minutes, seconds per epoch
# of the one-shot supernet and per scored sub-network. At most 9 minutes.
#
#   bash bench/gpu_check.sh --prepare          # HERE, before the GPU call: .whl/ and .data/
#   bash bench/gpu_check.sh [--data-dir DIR]   # on the GPU machine (see bench/README.md)
#   bash bench/gpu_check.sh --cpu [--quick]    # the same on the CPU; --quick: the test's budget
#
# It installs nothing from outside the registries: Python packages the machine lacks come from
# wheels that --prepare downloaded from PyPI into .whl/ (the device machine reaches no network),
# unpacked into a temporary folder, never into the machine's own environment.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT_S=540  # 9 minutes, the check's whole budget (a device call may run 10)

# The mincap dependencies a plain PyTorch machine lacks (optuna's and alembic's own ones included).
WHEELS="optuna alembic sqlalchemy mako colorlog torch-pruning constriction zstandard"
MODULES="optuna torch_pruning constriction zstandard rich"

pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
    # find_spec, not an import: importing torch only to choose would cost seconds
    elif [ -x .venv/bin/python ] && .venv/bin/python -c "
import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" 2>/dev/null; then
        echo .venv/bin/python
    else echo python3; fi
}
PY=$(pick_python)

if [ "${1:-}" = "--prepare" ]; then
    # Versions as installed here, for the device's Python (3.12, x86-64 manylinux): one of each.
    mkdir -p .whl .data/MNIST/raw
    grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo '/.data/' >> .git/info/exclude
    for name in $WHEELS; do
        version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
            -d .whl "$name${version:+==$version}" 2>&1 | grep -v "^WARNING: Location" || true
    done
    src=$(PYTHONPATH="$PWD" "$PY" -c "from mincap.data.registry import data_dirs
found = [d for d in data_dirs() if (d / 'MNIST/raw/train-images-idx3-ubyte.gz').is_file()]
print(found[0] if found else '')")
    if [ -z "$src" ]; then
        echo "gpu_check: MNIST not found on mincap's data path; set MINCAP_DATA" >&2
        exit 2
    fi
    cp "$src"/MNIST/raw/*.gz .data/MNIST/raw/
    size=$(du -sch .whl .data | tail -1 | cut -f1)
    echo "prepared: $(ls .whl | wc -l) wheels in .whl/, MNIST in .data/ ($size); then, on the"
    echo "device: carry [\".whl\", \".data\"], run: bash bench/gpu_check.sh --data-dir .data"
    exit 0
fi

missing=$("$PY" -c "
import importlib.util
print(' '.join(m for m in '$MODULES'.split() if importlib.util.find_spec(m) is None))")
if [ -n "$missing" ]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        site=$(mktemp -d /tmp/mincap-site.XXXXXX)
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
            .whl/*.whl
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: missing Python packages: $missing;" \
            "run 'bash bench/gpu_check.sh --prepare' where pip works and carry .whl" >&2
        exit 2
    fi
fi
# mincap from this checkout, installed or not.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout "$LIMIT_S" "$PY" bench/gpu_check.py "$@"
