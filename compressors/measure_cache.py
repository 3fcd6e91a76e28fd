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
