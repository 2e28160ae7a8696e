"""Paths inside the worker's and the planner's containers that Kompress itself uses.

Owns: those paths, in one place: the operator mounts its own volumes there, the worker writes there,
and the API refuses a user volume mounted on, above or inside any of them.
Must not: import anything of the API (both the API model and the worker protocol import it).
"""

from __future__ import annotations

SCRATCH_DIR = "/scratch"
SHM_DIR = "/dev/shm"
TERMINATION_LOG = "/dev/termination-log"

WORKER_PATHS = (SCRATCH_DIR, SHM_DIR, TERMINATION_LOG)
