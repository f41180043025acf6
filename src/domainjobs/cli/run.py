"""``domainjobs run``: discover, build one SAQ worker per queue, run until stopped; or, with
``--processes``/``--max-jobs``/``--reload``, supervise worker processes that do so."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from domainjobs.brokers import embedded
from domainjobs.brokers.urls import redact, resolve_url
from domainjobs.cli.common import Subparsers, add_command, load, validate_settings
from domainjobs.config import ENV_PREFIX, FIELDS, Settings, cron_timezone
from domainjobs.discovery.builder import discover_configured
from domainjobs.observability import cli as metrics_cli
from domainjobs.registry import Registry
from domainjobs.runtime import loops
from domainjobs.runtime.logs import LOG_FORMATS, LOG_LEVELS, JobLogger, setup_logging
from domainjobs.runtime.runner import DEFAULT_GRACE, STOP_SIGNALS, run_workers
from domainjobs.runtime.supervisor import Supervisor
from domainjobs.runtime.worker import WORKER_DEFAULTS, build_workers

logger = logging.getLogger("domainjobs")

HELP = """\
Discover every domain, build one saq.Worker per queue and run them all until SIGINT/SIGTERM.
On the first signal no new job is taken and running jobs get --grace seconds to finish;
what is left is re-queued; a second signal stops at once (still re-queueing). --burst
drains the queues and exits 0. --processes N runs N worker processes under a supervisor
that restarts any that die.

examples:
  python -m domainjobs run --url redis://localhost:6379
  python -m domainjobs run -q mail --concurrency 50
  python -m domainjobs run --processes auto --max-jobs 10000 --log-format json
  python -m domainjobs run --web --port 8080     # SAQ's UI on http://127.0.0.1:8080
  python -m domainjobs run --reload              # development: restart on code changes
  python -m domainjobs run --burst               # process what is queued, then exit
  python -m domainjobs run --metrics-port 9500   # Prometheus metrics at :9500/metrics
  DOMAINJOBS_METRICS_PORT=9500 python -m domainjobs run --web-only   # the same, UI only
"""


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def processes_count(text: str) -> int:
    """argparse type: ``auto`` (one per CPU core) or a whole number >= 1."""
    if text == "auto":
        return os.cpu_count() or 1
    return positive_int(text)


def seconds(text: str) -> float:
    """argparse type: seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text}")
    return value


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add the ``run`` command."""
    parser = add_command(
        subparsers, common, "run", help="run workers for the discovered jobs", doc=HELP
    )
    parser.add_argument(
        "-q",
        "--queue",
        dest="queues",
        action="append",
        help="serve this queue (repeatable; default all)",
    )
    parser.add_argument(
        "--concurrency", type=positive_int, help="jobs run at once per queue (default 10)"
    )
    parser.add_argument("--burst", action="store_true", help="process what is queued, then exit 0")
    group = parser.add_argument_group("processes and shutdown")
    group.add_argument(
        "--processes",
        type=processes_count,
        default=1,
        metavar="N",
        help="worker processes under a supervisor ('auto': one per CPU core; default 1)",
    )
    group.add_argument(
        "--max-jobs",
        type=positive_int,
        metavar="M",
        help="recycle a worker process after about M jobs (a guard against leaks)",
    )
    group.add_argument(
        "--grace",
        type=seconds,
        default=DEFAULT_GRACE,
        metavar="S",
        help=f"seconds running jobs get to finish on SIGTERM/SIGINT (default {DEFAULT_GRACE:g})",
    )
    group.add_argument(
        "--reload",
        action="store_true",
        help="restart the workers when a .py file under --app-dir changes (development)",
    )
    group.add_argument(
        "--sweep-interval",
        type=positive_int,
        metavar="S",
        help="seconds between sweeps for jobs of dead workers (SAQ's timers['sweep'])",
    )
    group.add_argument("--supervised-by", type=int, help=argparse.SUPPRESS)
    group = parser.add_argument_group("web UI (extra 'web')")
    group.add_argument(
        "--web",
        action="store_true",
        help="serve the dashboard (and SAQ's own UI under /saq/) for every queue",
    )
    group.add_argument("--host", default="127.0.0.1", help="web UI address (default 127.0.0.1)")
    group.add_argument("--port", type=positive_int, default=8080, help="web UI port (default 8080)")
    group.add_argument(
        "--web-only", action="store_true", help="serve the web UI and run no workers"
    )
    group.add_argument(
        "--web-insecure",
        action="store_true",
        help="allow serving the UI beyond localhost without DOMAINJOBS_WEB_PASSWORD",
    )
    group = parser.add_argument_group("logging and speed")
    group.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text (default) or json lines"
    )
    group.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="info (default: a line per job), warning (only failed jobs and problems), ...",
    )
    group.add_argument(
        "--loop",
        choices=loops.LOOPS,
        default="auto",
        help="event loop: auto (uvloop if the 'speed' extra is installed), asyncio, uvloop",
    )
    metrics_cli.add_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the workers (or their supervisor); the exit status says whether all stopped cleanly."""
    settings = load(args, "concurrency", "metrics_port")
    metrics_cli.use_setting(args, settings)
    if args.queues:
        settings = settings.replace(queues=tuple(args.queues))
    setup_logging(args.debug, args.log_format, args.log_level)
    loop = loops.loop_name(args.loop)
    registry = discover_configured(settings)
    validate_settings(settings, registry)
    url = resolve_url(None, settings)
    if args.supervised_by is not None:
        embedded.adopt(url, settings)  # a crashed embedded broker is started again here too
    args.cron_tz = settings.cron_tz  # the dashboard's schedules page shows times in it
    if args.web_only:
        args.web = True
        web_only = with_web(args, registry, url, until_signal())
        return loops.run(metrics_cli.serving(args, registry, url, web_only), args.loop)
    supervised = args.processes > 1 or args.max_jobs is not None or args.reload
    if args.supervised_by is None and supervised:
        main: Coroutine[Any, Any, int] = supervise(args, settings, registry, url)
    else:
        main = work(args, settings, registry, url, loop)
    return loops.run(main, args.loop)


def web_parts(args: argparse.Namespace, registry: Registry, url: str) -> tuple[Any, Any]:
    """The web UI app and its bound socket, or a ``ConfigError`` before any worker starts."""
    from domainjobs import web  # needs the 'web' extra (starlette, uvicorn)

    web.check_exposure(args.host, web.credentials_from_env() is not None, args.web_insecure)
    app = web.create_app(registry, url, cron_tz=getattr(args, "cron_tz", None))
    return app, web.bind(args.host, args.port)


async def with_web(
    args: argparse.Namespace, registry: Registry, url: str, body: Coroutine[Any, Any, int]
) -> int:
    """Run ``body`` with the web UI served beside it (when ``--web``)."""
    if not args.web:
        return await body
    from domainjobs import web  # needs the 'web' extra (starlette, uvicorn)

    try:
        app, sock = web_parts(args, registry, url)
    except BaseException:
        body.close()
        raise
    stop = asyncio.Event()
    server = asyncio.create_task(web.serve(app, sock, stop))
    logger.info("web UI on http://%s:%d/", args.host, sock.getsockname()[1])
    try:
        return await body
    finally:
        stop.set()
        await server


async def until_signal() -> int:
    """Wait for SIGINT/SIGTERM (``--web-only``); exit status 0."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    logger.info("web UI stopped")
    return 0


async def work(
    args: argparse.Namespace, settings: Settings, registry: Registry, url: str, loop: str
) -> int:
    """This process runs the workers itself."""
    job_logger = JobLogger({name: spec.domain for name, spec in registry.tasks.items()})
    extra: dict[str, Any] = {}
    if args.sweep_interval:
        extra["timers"] = {**WORKER_DEFAULTS.get("timers", {}), "sweep": args.sweep_interval}
    metrics_cli.prepare_worker(args)  # before the workers are built
    names = settings.queues or registry.queues
    announce = serving_announcement(
        len(names) or 1,
        f"{len(registry.tasks)} task(s) in {len(registry.domains)} domain(s); serving "
        f"queue(s) {', '.join(names) or 'default'} on {redact(url)} "
        f"(pid {os.getpid()}, {loop} loop)",
    )
    workers = build_workers(
        registry,
        queues=settings.queues or None,
        url=url,
        concurrency=settings.concurrency,
        burst=args.burst,
        cron_tz=cron_timezone(settings.cron_tz),
        startup=[announce],
        before_process=[job_logger.before],
        after_process=[job_logger.after],
        metadata={"pid": os.getpid(), "host": os.uname().nodename},
        **extra,
    )
    logger.info("connecting to %s", redact(url))
    body = run_workers(
        workers,
        grace=args.grace,
        max_jobs=args.max_jobs,
        parent_pid=args.supervised_by,
        connect_timeout=settings.connect_timeout,
    )
    return await metrics_cli.serving(args, registry, url, with_web(args, registry, url, body))


def serving_announcement(workers: int, message: str) -> Callable[[dict[str, Any]], Any]:
    """A startup function for every worker of this process: once the last of them has
    connected and the startup hooks have run, it logs ``message`` ("serving queue(s) ..."),
    so that line is never printed for workers that are not, in fact, serving."""
    waiting = [workers]

    async def announce(ctx: dict[str, Any]) -> None:
        waiting[0] -= 1
        if waiting[0] == 0:
            logger.info("%s", message)

    return announce


def child_environment(settings: Settings, url: str) -> dict[str, str]:
    """The environment of a worker process: ours, plus every resolved setting (so a child
    rediscovers exactly what we did, and the broker password stays out of ``ps``)."""
    env = dict(os.environ)
    for name in FIELDS:
        value = getattr(settings, name)
        if isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = "" if value is None else str(value)
        if name == "app_dir":
            text = os.path.abspath(text)
        env[ENV_PREFIX + name.upper()] = text
    env[ENV_PREFIX + "URL"] = url
    return env


def child_command(args: argparse.Namespace) -> list[str]:
    """``python -m domainjobs run ...`` for one supervised worker process."""
    command = [sys.executable, "-m", "domainjobs", "run", "--supervised-by", str(os.getpid())]
    command += ["--grace", str(args.grace), "--log-format", args.log_format, "--loop", args.loop]
    command += ["--log-level", args.log_level]
    if args.max_jobs is not None:
        command += ["--max-jobs", str(args.max_jobs)]
    if args.sweep_interval:
        command += ["--sweep-interval", str(args.sweep_interval)]
    if args.burst:
        command.append("--burst")
    if args.debug:
        command.append("--debug")
    return command + metrics_cli.child_arguments(args)


async def supervise(
    args: argparse.Namespace, settings: Settings, registry: Registry, url: str
) -> int:
    """Supervise ``--processes`` worker processes (and watch files with ``--reload``)."""

    if args.reload:
        from domainjobs.runtime import reload  # needs the 'reload' extra (watchfiles)

        reload.ensure_available()
    metrics_cli.prepare_supervisor(args)  # the children's shared metrics folder
    env = child_environment(settings, url)
    supervisor = Supervisor(
        child_command(args),
        args.processes,
        env=env,
        burst=args.burst,
        restart_on_usage_error=args.reload,
    )
    logger.info(
        "supervising %d worker process(es) for %d task(s) on %s",
        args.processes,
        len(registry.tasks),
        redact(url),
    )
    if not args.reload:
        body = with_web(args, registry, url, supervisor.run())
        return await metrics_cli.serving(args, registry, url, body)
    stop = asyncio.Event()
    watcher = asyncio.create_task(
        reload.watch(env[ENV_PREFIX + "APP_DIR"], supervisor.restart_all, stop)
    )
    try:
        body = with_web(args, registry, url, supervisor.run())
        return await metrics_cli.serving(args, registry, url, body)
    finally:
        stop.set()
        await watcher
