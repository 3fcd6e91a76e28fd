"""Suite-wide isolation: every test run gets its own Shrinkwise data folder and database.

Set in ``pytest_configure`` (before any test module imports the app) so the Streamlit AppTest
scripts, the browser test's server and the job worker subprocesses all inherit it: a test run never
reads or writes the user's real database or uploads. The demo model cache (``SHRINKWISE_CACHE``) is
left alone on purpose, so the one-off GGUF conversion is shared across runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_created: list[str] = []


def pytest_configure(config) -> None:
    home = tempfile.mkdtemp(prefix="shrinkwise-test-home-")
    _created.append(home)
    os.environ["SHRINKWISE_HOME"] = home
    os.environ.pop("SHRINKWISE_DATABASE_URL", None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_unconfigure(config) -> None:
    for path in _created:
        shutil.rmtree(path, ignore_errors=True)
