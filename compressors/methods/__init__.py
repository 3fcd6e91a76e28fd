"""Importing this package registers every bundled compressor (one module each)."""

from compressors.methods import (  # noqa: F401  # noqa: F401  (dynamic methods: inference-phase token pruning, TEAL)  # noqa: F401  (training methods: fine-tuning and pre-training phases)
    aim,
    cpu_inference,
    gptq,
    lazyllm,
    llm_pruner,
    magnitude,
    rtn,
    selective_distillation,
    sparse_pretraining,
    sparsegpt,
    spqr,
    teal,
    wanda,
)
