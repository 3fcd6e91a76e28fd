"""Importing this package registers every bundled compressor (one module each)."""

from compressors.methods import gptq, magnitude, rtn, sparsegpt, spqr, wanda  # noqa: F401
from compressors.methods import aim, lazyllm, teal  # noqa: F401  (dynamic methods: inference-phase token pruning, TEAL)
from compressors.methods import cpu_inference  # noqa: F401  (the paper's CPU method: dynamic int8)
from compressors.methods import llm_pruner, selective_distillation, sparse_pretraining  # noqa: F401  (training methods: fine-tuning and pre-training phases)
