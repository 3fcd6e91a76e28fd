"""Pure tensor functions behind the compressors: quantization grids, Hessians, GPTQ, SpQR and pruning.

Nothing here walks a model; every function takes plain tensors so tests can feed it a toy layer and a
made-up Hessian (the split llm-compressor uses between its modifiers and their ``*_utils`` files).
"""
