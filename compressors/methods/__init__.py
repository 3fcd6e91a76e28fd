"""Importing this package registers every bundled compressor (one module each).

Every module here is imported, so a new compressor needs only its own module (with ``@register`` and
``implements``) and its method's ``compressor:`` entry in ``knowledge/data/methods``; there is no list
to extend. Helper modules (``layerwise``) are imported too, which is harmless.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
