"""Importing this package registers every bundled compressor (one module each)."""

from compressors.methods import gptq, magnitude, rtn, sparsegpt, spqr, wanda  # noqa: F401
from compressors.methods import aim, lazyllm, teal  # noqa: F401  (dynamic methods: inference-phase token pruning, TEAL)
