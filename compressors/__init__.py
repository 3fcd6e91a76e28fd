"""Bundled PyTorch compressors behind one registry (``compressors.base``), model and text loading,
the evaluation harness, progress reporting, packed storage and export (the job system is `jobs`)."""
