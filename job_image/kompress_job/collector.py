"""Python's cyclic garbage collector, kept out of the way of the big imports and of the planner.

torch, transformers and llm-compressor build ~400k long-lived objects as they are imported. While they are
built, each full collection rescans all of them (about 0.7 s of a 4.4 s import on the 2-core machine); once
built, every full collection during planning or compression rescans them again (about 40 % of the time to plan
GLM-4.5-Air). Neither finds anything: import-time objects live as long as the process, and the planner makes
no reference cycles worth chasing. Reference counting still frees everything else as usual.
"""

from __future__ import annotations

import atexit
import gc
import importlib
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the block (restored after it, also on error)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def import_and_freeze(*modules: str) -> None:
    """Import `modules` with the collector paused, then move every object alive now to the permanent generation,
    so later collections (during compression) scan only what the job itself makes. For a process that runs one
    job: what is frozen is never collected."""
    with paused():
        for name in modules:
            importlib.import_module(name)
    gc.collect()  # once, so that garbage made while the collector was paused is not frozen with the rest
    gc.freeze()


def off_for_this_process() -> None:
    """For a process that does one short task and exits (`kompress plan`, the planning pod): no cyclic collection
    at all, and, at exit, none of the objects scanned one last time by the interpreter's final collection."""
    gc.disable()
    atexit.register(gc.freeze)
