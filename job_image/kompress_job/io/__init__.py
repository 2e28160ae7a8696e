"""I/O: where bytes come from and go to (sources, S3, transfers, storage, checksums, the model cache, credentials). Knows nothing of models."""
