"""How a dynamic method is saved next to untouched weights and re-installed when Shrinkwise loads it.

A dynamic method changes no weight, so its checkpoint is the original checkpoint plus a small record:
which method, its config, and its calibrated payload (TEAL's per-layer thresholds; nothing for LazyLLM
and AIM). The record lives in two places that always agree:

- ``model.config.shrinkwise_dynamic``: ``save_pretrained`` writes it into ``config.json``, so a plain
  transformers checkpoint carries it; plain ``AutoModelForCausalLM.from_pretrained`` loads the original
  model (the extra key is kept on the config and otherwise ignored), and Shrinkwise re-applies the
  method with :func:`reinstall`;
- :func:`dynamic_section` returns the same dict for the ``"dynamic"`` section of Shrinkwise's
  ``shrinkwise.json`` manifest (storage.py).
"""

from __future__ import annotations

import logging
from typing import Any

from compressors.base import CompressionError, CompressorConfig, CompressorId

log = logging.getLogger(__name__)

CONFIG_KEY = "shrinkwise_dynamic"
FORMAT_VERSION = 1


def record(
    model: Any, compressor_id: CompressorId, config: CompressorConfig, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Attach the record of an installed dynamic method to ``model.config`` and return it.

    The record's ``"method"`` key holds the compressor id (what re-installs it on load), as saved
    checkpoints already spell it.
    """
    section = {
        "format": FORMAT_VERSION,
        "method": compressor_id,
        "config": config.to_dict(),
        "payload": payload or {},
        "weights": "original (untouched)",
    }
    setattr(model.config, CONFIG_KEY, section)
    return section


def dynamic_section(model: Any) -> dict[str, Any] | None:
    """The record of the dynamic method installed on ``model`` (or loaded with its config), if any."""
    section = getattr(model.config, CONFIG_KEY, None)
    return dict(section) if isinstance(section, dict) else None


def reinstall(model: Any, section: dict[str, Any] | None = None) -> bool:
    """Re-apply the dynamic method recorded in ``section`` (default: the model's config); False if none.

    Called by the checkpoint loader after the (original) weights are loaded.
    """
    from compressors.base import get_compressor

    section = section if section is not None else dynamic_section(model)
    if not section:
        return False
    if int(section.get("format", 0)) != FORMAT_VERSION:
        raise CompressionError(
            f"dynamic record format {section.get('format')!r} is not {FORMAT_VERSION}; "
            "re-run the compressor with this version of Shrinkwise"
        )
    comp = get_compressor(CompressorId(section["method"]))
    install = getattr(comp, "install", None)
    if install is None:
        raise CompressionError(f"compressor {section['method']!r} is not dynamic; it has no install()")
    config = comp.config_cls.from_dict(section["config"])
    install(model, config, section.get("payload") or {})
    log.info("re-installed dynamic method %s", section["method"])
    return True
