"""Shared pytest setup: the emulated Kubernetes API fixtures (kompress_testing.pytest_plugin)."""

pytest_plugins = ["kompress_testing.pytest_plugin"]
