"""The worker's stages, one module each, each exposing `run(ctx) -> None` (see kompress_job.pipeline)."""
