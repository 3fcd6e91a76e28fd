"""The original model's measurement, kept per model files, text and window settings.

Measuring the original is the same work for every method tried on a model (on a 7B model it can take
longer than a compression), so a run reuses it when nothing it depends on changed: the model's files
(names, sizes, modification times), the evaluation text, the windows, whether speed was measured, the
harness's version and the torch/transformers releases. Speeds come from the run that measured them; the
reusing run says so in its log. Stored as JSON under the data folder (``<data>/measurements/``), so a
test session or a second user never reads another's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
import transformers

from compressors.evaluate import EvalResult
from compressors.models import ModelInfo

log = logging.getLogger(__name__)

#: Bump when the harness measures differently, so older measurements are not reused.
HARNESS_VERSION = 2


def _files_of(info: ModelInfo) -> list[Path] | None:
    if not info.path:
        return None  # a hub model: no local files to fingerprint
    p = Path(info.path)
    if p.is_file():
        return [p]
    names = ["config.json", *info.weight_files]
    return [p / n for n in names if (p / n).is_file()]


def key(info: ModelInfo, eval_text: str, n_windows: int, seq_len: int, measure_speed: bool) -> str | None:
    """The cache key of an original's measurement, or None when the model cannot be fingerprinted."""
    files = _files_of(info)
    if not files:
        return None
    parts: dict[str, Any] = {
        "files": [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files],
        "text": hashlib.sha256(eval_text.encode()).hexdigest(),
        "windows": [n_windows, seq_len],
        "speed": measure_speed,
        "harness": HARNESS_VERSION,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _path(cache_key: str) -> Path:
    from knowledge.paths import data_home

    return data_home() / "measurements" / f"{cache_key}.json"


def load(cache_key: str | None) -> EvalResult | None:
    """The stored measurement, or None (nothing stored, or a file that no longer reads)."""
    if cache_key is None:
        return None
    path = _path(cache_key)
    try:
        return EvalResult.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, OSError) as exc:
        log.warning("ignoring the unreadable measurement %s: %s", path.name, exc)
        return None


def store(cache_key: str | None, result: EvalResult) -> None:
    if cache_key is None:
        return
    path = _path(cache_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_dict()))
    tmp.replace(path)  # atomic: a reader never sees half a file


# ---------------------------------------------------------------------------------------------------
# One measurement of the original at a time per key (a sweep's children run together)

#: How often a run waiting for another run's measurement of the original looks again (and at Cancel).
LOCK_POLL_S = 0.5


class BaselineLock:
    """An exclusive ``flock`` on ``<data>/measurements/<key>.lock`` while one run measures the original.

    Why a lock and not a "baseline job" run first: the children of a sweep are ordinary jobs that any
    backend may run in any order and on any machine sharing the data folder, and a run started alone on
    the same model and text must profit too. The first run to need the measurement takes the lock and
    measures; every other run waits for the lock, then finds the measurement in the cache and reuses it.
    If the measuring run fails or is cancelled, the lock is released (by :meth:`release`, or by the
    kernel when its process ends) and the next run measures instead, so nobody waits for a dead run.
    A run waiting here still answers Cancel (``cancel_event``), and reports that it waits.
    """

    def __init__(self, cache_key: str | None) -> None:
        self.key = cache_key
        self._fh: Any = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(
        self,
        cancel_event: Any = None,
        on_wait: Any = None,
        clock: Any = None,
    ) -> BaselineLock:
        """Wait for the lock (polling every :data:`LOCK_POLL_S`); returns self. No key: nothing to lock.

        ``on_wait()`` is called once when the lock is busy (the run logs that it waits for another run's
        measurement); ``cancel_event`` set while waiting raises :class:`compressors.base.Cancelled`.
        """
        import fcntl
        import time

        if self.key is None or self._fh is not None:
            return self
        path = _path(self.key).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
        told = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if cancel_event is not None and cancel_event.is_set():
                    fh.close()
                    from compressors.base import Cancelled

                    raise Cancelled(
                        "cancelled while waiting for another run's measurement of the original"
                    ) from None
                if not told and on_wait is not None:
                    on_wait()
                    told = True
                (clock or time.sleep)(LOCK_POLL_S)
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __del__(self) -> None:  # a run that raised between acquire and release: never keep others waiting
        self.release()
