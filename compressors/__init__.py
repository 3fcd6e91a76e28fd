"""Bundled PyTorch compressors behind one registry (``compressors.base``), model and text loading,
the evaluation harness, packed storage and export, and the job runner."""
