"""The id of a knowledge-base method, as a type of its own.

A method id (``"magnitude-pruning"``, ``"dynamic-int8"``) names an entry of ``knowledge/data/methods``;
a compressor id (:data:`compressors.base.CompressorId`, ``"magnitude"``, ``"cpu-inference"``) names
the code that runs one. They are both plain strings and often spelled alike, which is how a run got
stored under a compressor id and its measured figures never reached the method's page. Distinct
``NewType``\\ s let the type checker catch one passed where the other is meant; at run time they are
``str``. This module imports nothing so that ``compressors`` can use it without loading the
knowledge base.
"""

from __future__ import annotations

from typing import NewType

#: Id of a method in the knowledge base (``Method.id``), e.g. ``"gptq"``, ``"magnitude-pruning"``.
MethodId = NewType("MethodId", str)
