"""The worker's logs: text with a progress bar on a terminal, JSON lines in a pod, never a secret value.

Owns: the root logger's one handler and its format (`text` or `json`, from --log-format or
$KOMPRESS_LOG_FORMAT; default json when stderr is not a terminal), the redaction filter on it (every
value of the credential variables is replaced with ***, in messages, arguments and tracebacks),
quieting chatty libraries, and the progress sinks that show ProgressReporter snapshots: a tqdm
bar on a terminal, throttled log lines elsewhere.
Must not: decide what is logged.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import IO, Any

from kompress_api.worker_protocol import WorkerProgress

from kompress_job.redaction import Redactor

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_NOISY = ["botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore", "filelock", "huggingface_hub", "datasets", "fsspec", "werkzeug"]


class RedactionFilter(logging.Filter):
    """Masks secret values in a record before any handler formats it: message, arguments, traceback, extras."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redact:
            return True
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, stage, and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                doc[key] = value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


class _TqdmStream:
    """Writes log lines above a running tqdm bar instead of through it."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        from tqdm import tqdm

        text = text.rstrip("\n")
        if text:
            tqdm.write(text, file=self.stream)

    def flush(self) -> None:
        self.stream.flush()


class _LinesToLog:
    """A text stream that turns each complete line written to it into a log record.

    In a pod, libraries that print (llm-compressor's loguru sink on stdout, progress bars, stray prints)
    would break the JSON lines and bypass the redaction filter; their lines go through logging instead.
    A carriage return (a progress bar redrawing itself) keeps only the text after it.
    """

    def __init__(self, logger: logging.Logger, level: int = logging.INFO) -> None:
        self.logger, self.level = logger, level
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            line = line.rsplit("\r", 1)[-1].rstrip()
            if line:
                self.logger.log(self.level, "%s", line)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


# The process's own stdout before setup() took it over: where `kompress run` prints its result.
RESULT_STREAM: IO[str] = sys.stdout


def take_over_stdio(fmt: str, log_stream: IO[str]) -> None:
    """Route what libraries print: into JSON log records (json), or to the log stream (text), so that
    stdout carries only the command's result. Progress bars of libraries are switched off in json."""
    global RESULT_STREAM
    if isinstance(sys.stdout, _LinesToLog) or sys.stdout is log_stream:
        return
    RESULT_STREAM = sys.stdout
    if fmt == "json":
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        sys.stdout = _LinesToLog(logging.getLogger("kompress.stdout"))  # type: ignore[assignment]
        sys.stderr = _LinesToLog(logging.getLogger("kompress.stderr"), logging.WARNING)  # type: ignore[assignment]
    else:
        sys.stdout = log_stream  # type: ignore[assignment]


def default_format(stream: IO[str] = sys.stderr) -> str:
    return "text" if getattr(stream, "isatty", lambda: False)() else "json"


def setup(fmt: str | None, redactor: Redactor, *, stream: IO[str] | None = None, level: int = logging.INFO) -> logging.Logger:
    """Install the one handler on the root logger; returns the `kompress` logger."""
    stream = stream or sys.stderr
    fmt = fmt or default_format(stream)
    tty = getattr(stream, "isatty", lambda: False)()
    handler = logging.StreamHandler(_TqdmStream(stream) if fmt == "text" and tty else stream)  # type: ignore[arg-type]
    handler.addFilter(RedactionFilter(redactor))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return logging.getLogger("kompress")


class LogProgressSink:
    """Progress as log lines: on each stage change, and at most every `interval` seconds in between."""

    def __init__(self, log: logging.Logger, interval: float = 30.0) -> None:
        self.log = log
        self.interval = interval
        self._stage: str | None = None
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, snap: WorkerProgress) -> None:
        now = time.monotonic()
        with self._lock:
            changed = snap.stage != self._stage
            if not changed and now - self._last < self.interval:
                return
            self._stage, self._last = snap.stage, now
        extra: dict[str, Any] = {"stage": snap.stage, "percent": snap.percent}
        text = f"progress {snap.percent}%: {snap.stage}"
        if snap.total_steps:
            text += f" step {snap.step}/{snap.total_steps}"
        if snap.bytes_total:
            text += f" {(snap.bytes_done or 0) / 1e9:.2f}/{snap.bytes_total / 1e9:.2f} GB"
            extra.update(bytes_done=snap.bytes_done, bytes_total=snap.bytes_total)
        if snap.eta_seconds is not None:
            text += f", ETA {snap.eta_seconds // 60} min"
            extra["eta_seconds"] = snap.eta_seconds
        if snap.message:
            text += f" ({snap.message})"
        self.log.info(text, extra=extra)


class TqdmProgressSink:
    """One bar per stage on a terminal: bytes during transfers, steps otherwise."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._bar: Any = None
        self._stage: str | None = None
        self._unit: str | None = None
        self._lock = threading.Lock()

    def __call__(self, snap: WorkerProgress) -> None:
        from tqdm import tqdm

        with self._lock:
            unit = "B" if snap.bytes_total else "step"
            total = snap.bytes_total if snap.bytes_total else snap.total_steps
            if snap.stage != self._stage or unit != self._unit:
                self.close()
                self._stage, self._unit = snap.stage, unit
                if snap.stage == "done":
                    return
                self._bar = tqdm(total=total, desc=snap.stage, unit=unit, unit_scale=unit == "B", file=self.stream, leave=False, dynamic_ncols=True)
            if self._bar is None:
                return
            if total and self._bar.total != total:
                self._bar.total = total
            done = snap.bytes_done if unit == "B" else snap.step
            self._bar.n = done or 0
            if snap.message:
                self._bar.set_postfix_str(snap.message[:60], refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
