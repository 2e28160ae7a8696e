"""The container runtime of the node agent: a container is a local process group.

Owns: resolving the executable (the image's programs are this repository's `.venv/bin`, then the
host's PATH), starting the process in its own session with its log file as stdout and stderr,
noticing its exit at once (pidfd), memory (the process tree's resident memory sampled five times a
second: its peak is recorded, and over the limit the group is killed as the kernel's cgroup OOM
killer would, exit 137, OOMKilled), graceful stop (SIGTERM to the group, SIGKILL after the grace period), killing what is
left of the group when the main process ends (as a container's PID namespace does), and reading the
termination message and the log's tail.
Must not: talk to the API or decide pod phases (kubelet.py does).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

# kubelet: pkg/kubelet/container's limits on what a terminated container reports.
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # If the agent dies without stopping its pods (kill -9, a crashed test run), they die too.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class Exit:
    """A terminated container, in containerStatuses' words."""

    code: int
    reason: str  # Completed, Error, OOMKilled, StartError, ContainerStatusUnknown
    started_at: str
    finished_at: str
    message: str = ""


def resolve_executable(name: str, bin_dirs: Sequence[Path], path_env: str) -> str | None:
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    for folder in bin_dirs:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name, path=path_env)


class Process:
    """One container's process group. `await process.exited` gives its Exit."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path, *,
                 bin_dirs: Sequence[Path], memory_limit: float | None = None, memory_poll_s: float = 0.2) -> None:
        self.argv = list(argv)
        self.started_at = now_iso()
        self._started = time.monotonic()
        self.seconds: float | None = None  # how long it ran, once it ended
        self.memory_limit = memory_limit
        self.memory_poll_s = memory_poll_s
        self.peak_rss = 0
        self._oom = False
        self._stopping = False
        self.popen: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        executable = resolve_executable(self.argv[0], bin_dirs, env.get("PATH", os.defpath)) if self.argv else None
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[Exit] = loop.create_future()
        if executable is None:
            # containerd's words, shortened: the container never ran.
            self._finish(Exit(128, "StartError", self.started_at, now_iso(),
                              f'exec: "{self.argv[0] if self.argv else ""}": executable file not found in $PATH'))
            return
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [executable, *self.argv[1:]], env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only
            )
        self.pid = self.popen.pid
        self._task = loop.create_task(self._watch(), name=f"container-{self.pid}")

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def _finish(self, result: Exit) -> None:
        if self.seconds is None:
            self.seconds = round(time.monotonic() - self._started, 3)
        if not self.exited.done():
            self.exited.set_result(result)

    def _tree_rss(self) -> int:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    async def _watch(self) -> None:
        assert self.popen is not None
        loop = asyncio.get_running_loop()
        exited = asyncio.Event()
        pidfd = None
        try:
            pidfd = os.pidfd_open(self.pid)
            loop.add_reader(pidfd, exited.set)
        except (OSError, AttributeError):  # no pidfd: poll
            pidfd = None
        try:
            while self.popen.poll() is None:
                # Memory is sampled whether or not there is a limit: the peak is what a plan is checked against.
                rss = self._tree_rss()
                self.peak_rss = max(self.peak_rss, rss)
                if self.memory_limit and rss > self.memory_limit and not self._oom:
                    self._oom = True
                    self._signal_group(signal.SIGKILL)
                try:
                    await asyncio.wait_for(exited.wait(), self.memory_poll_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            if pidfd is not None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        # A container's other processes end with its main one.
        self._signal_group(signal.SIGKILL)
        code = self.popen.returncode
        exit_code = 128 - code if code < 0 else code
        if self._oom:
            reason = "OOMKilled"
        else:
            reason = "Completed" if exit_code == 0 else "Error"
        self._finish(Exit(exit_code, reason, self.started_at, now_iso()))

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def stop(self, grace_s: float) -> Exit:
        """SIGTERM, then SIGKILL after grace_s: what the kubelet does to a deleted pod's containers."""
        if self.running and self.popen is not None and not self._stopping:
            self._stopping = True
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), grace_s)
            except asyncio.TimeoutError:
                self._signal_group(signal.SIGKILL)
        return await self.exited


def read_termination_message(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_TERMINATION_MESSAGE).decode("utf-8", "replace")
    except OSError:
        return ""


def log_tail(path: Path, lines: int = FALLBACK_LOG_LINES, max_bytes: int = FALLBACK_LOG_BYTES) -> str:
    """The last `lines` lines of the log, at most `max_bytes` (FallbackToLogsOnError's message)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
