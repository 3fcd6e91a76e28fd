"""The one place that knows how transformers' API differs between the releases Shrinkwise supports.

transformers 5.x renames things between minor releases with a deprecation period (5.24 passes the KV
cache to ``forward`` as ``cache=`` and returns it as ``output.cache``; earlier 5.x releases call both
``past_key_values``). Code elsewhere asks this module instead of spelling either name, so the next rename
is a change here, and a release outside the supported range fails with a message that names the range
instead of an ``IndexError`` deep inside a forward pass.

Everything here reads public surface only (a ``forward`` signature, an output's declared fields, the
package version).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import transformers
from packaging.version import Version
from torch import nn

# The releases the code and its tests are known to work with; requirements/lock.txt pins one of them.
SUPPORTED_TRANSFORMERS = (Version("5.0"), Version("6.0"))
SUPPORTED_RANGE_TEXT = ">=5.0,<6"

# Names a decoder layer's captured keyword arguments may use for the KV cache, across supported releases.
CACHE_KWARG_NAMES = ("cache", "past_key_values", "past_key_value", "layer_past")


class UnsupportedTransformersError(RuntimeError):
    """The installed transformers is outside the range Shrinkwise supports."""


def transformers_version() -> Version:
    return Version(transformers.__version__)


def check_transformers_version() -> None:
    """Fail with a clear message when the installed transformers is outside the supported range."""
    low, high = SUPPORTED_TRANSFORMERS
    have = transformers_version()
    if not low <= have < high:
        raise UnsupportedTransformersError(
            f"transformers {have} is installed, but Shrinkwise supports transformers {SUPPORTED_RANGE_TEXT}. "
            "Install the locked set with `bash scripts/setup.sh` (requirements/lock.txt)."
        )


def cache_kwarg(model: nn.Module) -> str:
    """The keyword under which ``model.forward`` takes the KV cache in this release."""
    params = inspect.signature(model.forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise UnsupportedTransformersError(
        f"{type(model).__name__}.forward takes neither `cache` nor `past_key_values`; "
        f"supported transformers: {SUPPORTED_RANGE_TEXT} (installed {transformers_version()})"
    )


def output_cache(output: Any) -> Any:
    """The KV cache a model's forward returned (``output.cache`` or, in older 5.x, ``past_key_values``)."""
    names = {f.name for f in dataclasses.fields(output)} if dataclasses.is_dataclass(output) else set()
    for name in ("cache", "past_key_values"):
        if name in names:
            return getattr(output, name)
    raise UnsupportedTransformersError(
        f"{type(output).__name__} carries no KV cache field; supported transformers: {SUPPORTED_RANGE_TEXT}"
    )
