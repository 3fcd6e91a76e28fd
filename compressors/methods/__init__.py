"""Importing this package registers every bundled compressor: each module here that defines one
decorates it with ``@register``.

Modules are discovered rather than listed, so adding a compressor touches its own module and its
method's data entry, not a list here (helper modules such as ``layerwise`` register nothing).
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
