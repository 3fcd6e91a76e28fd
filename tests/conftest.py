"""Suite-wide isolation: every test run gets its own Shrinkwise data folder and database.

Set in ``pytest_configure`` (before any test module imports the app) so the Streamlit AppTest
scripts, the browser test's server and the job worker subprocesses all inherit it: a test run never
reads or writes the user's real database or uploads. The demo model cache (``SHRINKWISE_CACHE``) is
left alone on purpose, so the one-off GGUF conversion is shared across runs. Time estimates divide
by pinned rates (``SHRINKWISE_THROUGHPUT``) so they are deterministic and no test runs the throughput
probe or writes its cache; tests of the probe itself unset it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

_created: list[str] = []
# round figures of a small CPU: FLOP/s, FLOP/s, FLOP/s, bytes/s, seconds per small torch op
PINNED_THROUGHPUT = {
    "matmul_fp32": 2e10,
    "matmul_bf16": 2e10,
    "factor_fp32": 1e10,
    "bandwidth": 1e10,
    "op_overhead_s": 5e-6,
}


def pytest_configure(config) -> None:
    home = tempfile.mkdtemp(prefix="shrinkwise-test-home-")
    _created.append(home)
    os.environ["SHRINKWISE_HOME"] = home
    os.environ.pop("SHRINKWISE_DATABASE_URL", None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("SHRINKWISE_THROUGHPUT", json.dumps(PINNED_THROUGHPUT))
    # Server paths are read only under configured roots (jobs.access); tests build their checkpoints in
    # the temp folder, so it is a root for the run. Tests of the refusal set their own roots.
    os.environ["SHRINKWISE_MODEL_ROOTS"] = os.path.realpath(tempfile.gettempdir())


def pytest_unconfigure(config) -> None:
    for path in _created:
        shutil.rmtree(path, ignore_errors=True)
