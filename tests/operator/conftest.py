"""Fixtures of the operator tests (defined in operator_cluster.py)."""

from operator_cluster import clock, cluster, controller, operator  # noqa: F401
