"""Logging for ``domainjobs run``: stdlib logging to stderr, as text or one JSON object per
line, and one line per finished job.

The job line comes from SAQ's ``before_process``/``after_process`` hooks (see
:class:`JobLogger`). It carries the task, queue, domain, job key, status, attempts, how
long the job waited in its queue and how long it ran. A failure's traceback is logged
once, by SAQ itself ("Error processing job ..."); the job line only says ``failed``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from saq.utils import now

logger = logging.getLogger("domainjobs")
job_logger = logging.getLogger("domainjobs.jobs")

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes every ``logging.LogRecord`` has; anything else was passed with ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, any ``extra=`` fields,
    and ``exc_info`` as a single ``exception`` string (so a traceback stays one line)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, default=str)


JsonFormatter.converter = time.gmtime


LOG_LEVELS = ("debug", "info", "warning", "error")

#: The logger whose INFO lines (one per job) are written in batches.
BATCHED_LOGGER = "domainjobs.jobs"


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that writes the per-job INFO and DEBUG lines (logger
    ``domainjobs.jobs``) in batches, at most ``interval`` seconds late, from a background
    thread; every other line (start-up, shutdown, warnings) and a full batch are written at
    once, with everything before them, so lines of several processes keep their order.

    A pipe (a container's stderr) costs a system call and a wake-up of its reader per
    write: for one line per job that is about half the cost of logging it. If the process
    is killed outright, the job lines of its last ``interval`` seconds are lost.

    Once closed (``logging.config.dictConfig`` closes every handler, and uvicorn calls it
    when the web UI starts) the handler keeps working while it is still attached, writing
    each line at once.
    """

    def __init__(self, stream: Any = None, interval: float = 0.1, max_lines: int = 512) -> None:
        super().__init__(stream)
        self.interval = interval
        self.max_lines = max_lines
        self._pending: list[str] = []
        self._writer_stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._flush_every_interval, name="domainjobs-log-writer", daemon=True
        )
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the formatted line; write now for a warning or a full batch."""
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if (
            record.levelno >= logging.WARNING
            or record.name != BATCHED_LOGGER
            or len(self._pending) >= self.max_lines
            or self._writer_stopped.is_set()
        ):
            self.flush()

    def flush(self) -> None:
        """Write the queued lines in one go."""
        self.acquire()
        try:
            if self._pending:
                lines, self._pending = self._pending, []
                self.stream.write("".join(lines))
            if hasattr(self.stream, "flush"):
                self.stream.flush()
        except Exception:  # a closed or broken stream: nothing left to report to
            self._pending.clear()
        finally:
            self.release()

    def _flush_every_interval(self) -> None:
        while not self._writer_stopped.wait(self.interval):
            self.flush()

    def close(self) -> None:
        """Write what is queued and stop the background writer."""
        self._writer_stopped.set()
        self.flush()
        super().close()


def setup_logging(debug: bool = False, log_format: str = "text", level: str = "info") -> None:
    """Configure the root logger once: stderr, ``level`` (DEBUG with ``debug``), text or JSON.
    At ``warning`` the per-job lines of completed jobs are left out (failed ones stay).

    SAQ's own per-job INFO lines ("Processing", "Enqueuing", "Retrying") are turned down to
    WARNING unless ``debug``: the job line of :class:`JobLogger` replaces them (and costs a
    third of their time). SAQ's warnings and errors, tracebacks included, still show.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler: logging.Handler = (
        logging.StreamHandler(sys.stderr) if debug else BatchingStreamHandler(sys.stderr)
    )
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, BatchingStreamHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper()))
    logging.getLogger("saq").setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        # Neither format shows the caller, thread or process: don't compute them per record
        # (the logging docs' own advice; about a fifth of a log call's cost).
        logging._srcfile = None
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
    JobLogger.structured = log_format == "json"


_STARTED = "domainjobs_started_ms"
_T0 = "domainjobs_t0"


class JobLogger:
    """SAQ ``before_process``/``after_process`` functions that log one line per job end.

    ``domains`` maps a task's public name to its domain. The line is at INFO for a job
    that completed or was re-queued, at WARNING for one that failed or was aborted, with
    these ``extra`` fields (JSON keys): ``task``, ``queue``, ``domain``, ``job_key``,
    ``status``, ``attempts``, ``wait_ms``, ``run_ms``.
    """

    #: Whether to attach the fields to the record (JSON output); the text line has them all.
    structured = True

    def __init__(self, domains: Mapping[str, str]) -> None:
        self.domains = dict(domains)

    async def before(self, ctx: Any) -> None:
        """Remember when the job started (SAQ clears ``job.started`` on a retry)."""
        ctx[_T0] = time.perf_counter()
        ctx[_STARTED] = ctx["job"].started

    async def after(self, ctx: Any) -> None:
        """Log the job's end."""
        job = ctx.get("job")
        if job is None or not job_logger.isEnabledFor(logging.WARNING):
            return
        status = job.status.value if hasattr(job.status, "value") else str(job.status)
        level = logging.WARNING if status in ("failed", "aborted") else logging.INFO
        if level == logging.INFO and not job_logger.isEnabledFor(logging.INFO):
            return
        t0 = ctx.get(_T0)
        run_ms = round((time.perf_counter() - t0) * 1000, 2) if t0 is not None else None
        started = ctx.get(_STARTED) or job.started or now()
        since = max(job.queued, job.scheduled * 1000)
        wait_ms = max(0, started - since) if since else None
        if status == "queued":
            status = "retrying"
        queue = job.queue.name if job.queue is not None else None
        domain = self.domains.get(job.function)
        extra = None
        if self.structured:
            extra = {
                "task": job.function,
                "queue": queue,
                "domain": domain,
                "job_key": job.key,
                "status": status,
                "attempts": job.attempts,
                "wait_ms": wait_ms,
                "run_ms": run_ms,
            }
        job_logger.log(
            level,
            "job %s %s [queue=%s domain=%s key=%s attempts=%s wait=%sms run=%sms]",
            job.function,
            status,
            queue,
            domain,
            job.key,
            job.attempts,
            wait_ms,
            run_ms,
            extra=extra,
        )
