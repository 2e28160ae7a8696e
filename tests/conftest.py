"""Shared pytest setup: the emulated Kubernetes API fixtures (kompress_testing.pytest_plugin)."""

import os

# Tests run llm-compressor in this process and in subprocesses (workers run by the node agent) beside an operator
# and an API server: with spinning OpenMP threads that oversubscribes 2 cores badly (see kompress_job.cli).
# Set before any test module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

pytest_plugins = ["kompress_testing.pytest_plugin"]
