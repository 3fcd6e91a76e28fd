"""Shared pieces of the compressors that train: fine-tuning (LLM-Pruner's LoRA recovery, selective
distillation) and pre-training (sparse continued pre-training with a fixed mask).

* :mod:`.data`: training/validation token windows cut from the run's calibration tokens, a seeded sampler;
* :mod:`.loop`: a small AdamW loop with warm-up and cosine decay, progress and cancellation per step,
  perplexity, and the step-time cost model the ``estimate`` functions use;
* :mod:`.lora`: LoRA adapters through ``peft`` and merging them back into plain weights;
* :mod:`.distill`: per-token KL between teacher and student and the selective token weights;
* :mod:`.structural`: coupled-group structural pruning (attention heads with q/k/v/o under grouped-query
  attention, MLP channels with gate/up/down) ranked by first-order Taylor importance;
* :mod:`.student`: a layer-dropped copy of a model that still saves as a standard checkpoint;
* :mod:`.masked`: training with a fixed sparsity mask and packing the result as ``SparseLinear``.
"""
