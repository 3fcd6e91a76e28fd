"""Importing this package registers every bundled compressor (one module each)."""

from compressors.methods import gptq, magnitude, rtn, sparsegpt, spqr, wanda  # noqa: F401
