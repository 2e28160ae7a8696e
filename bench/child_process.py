"""One child process measured as a benchmark sees it: wall time and peak resident memory (from wait4, which
`subprocess.run` would take away by reaping the child itself). Shared by the bench scripts."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of `argv` run with `env` added; exits, showing the end of its
    stderr, if it fails. stderr goes to a file so that neither pipe can fill up and stall the child."""
    with tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env={**os.environ, **(env or {})})
        out = proc.stdout.read() if proc.stdout else b""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace")[-4000:])
            raise SystemExit(f"failed: {' '.join(argv)}")
    return wall, usage.ru_maxrss / 1024.0, out.decode()
