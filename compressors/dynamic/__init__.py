"""Shared runtime of Shrinkwise's dynamic compressors (weights untouched, behaviour installed at load).

- :mod:`compressors.dynamic.tokens`: layer hooks and a registered attention function that drop
  (LazyLLM, AIM) or merge (AIM) prompt tokens between layers, with a KV cache that remembers which
  positions reached each layer and an auxiliary cache of the dropped tokens' hidden states (LazyLLM's
  Aux Cache) so they can be revived during decoding (Llama, Mistral, Qwen2, Gemma-3 text).
- :mod:`compressors.hf_compat`: the only code touching transformers internals, with the version
  check (``>=5.24,<6``; tested 5.24.0).
- :mod:`compressors.dynamic.merging`: bipartite soft matching of neighbouring tokens (pure tensors).
- :mod:`compressors.dynamic.teal`: per-layer activation thresholds and the linear wrapper that skips the
  weight columns of small activations (TEAL), plus its sparse matrix-vector kernel.
- :mod:`compressors.dynamic.manifest`: how a dynamic method is recorded next to the untouched weights and
  re-installed when Shrinkwise loads that checkpoint.
"""
