"""The dashboard's routes: server-rendered pages (Jinja2 templates shipped in the package),
the chart data as JSON, and the POST actions with their confirmation step."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone, tzinfo
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from saq.job import Status
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from domainjobs.brokers.urls import describe
from domainjobs.registry import Registry
from domainjobs.web import data
from domainjobs.web.actions import JOB_ACTIONS, pause_cron
from domainjobs.web.queues import QueueSet

logger = logging.getLogger("domainjobs.web")

#: what a figure that does not exist shows (an en dash)
NONE = "\u2013"

#: how many failed jobs of one task a bulk action touches at most in one request
BULK_LIMIT = 10_000


def duration(milliseconds: float | None) -> str:
    """``12 ms``, ``1.4 s``, ``3.5 min``, ``2.0 h``; an en dash for None."""
    if milliseconds is None:
        return NONE
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def relative(epoch: float | None, now: float | None = None) -> str:
    """``12 s ago`` or ``in 3 min``."""
    if not epoch:
        return NONE
    delta = epoch - (time.time() if now is None else now)
    text = duration(abs(delta) * 1000)
    return f"in {text}" if delta > 0 else f"{text} ago"


def timestamp(epoch: float | None, tz: tzinfo = timezone.utc) -> str:
    """``2024-05-01 09:00:00 UTC`` (or the zone given)."""
    if not epoch:
        return NONE
    return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def number(value: float | None) -> str:
    """``12,345`` (an en dash for None)."""
    return NONE if value is None else f"{value:,.0f}"


def pretty(value: Any) -> str:
    """``value`` as indented JSON (``repr`` for what JSON cannot show)."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def environment() -> jinja2.Environment:
    """The templates of ``domainjobs/web/templates``, HTML autoescaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("domainjobs.web", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ms=duration, ago=relative, ts=timestamp, num=number, pretty=pretty)
    return env


def safe_next(value: str | None, base: str) -> str:
    """A redirect target inside this app (a path on this host), else the app's root."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return base + "/"


def with_message(target: str, message: str, kind: str = "ok") -> str:
    """``target`` with the flash message in its query string."""
    path, _, query = target.partition("?")
    pairs = [(k, v) for k, v in parse_qsl(query) if k not in ("msg", "kind")]
    pairs += [("msg", message), ("kind", kind)]
    return f"{path}?{urlencode(pairs)}"


def broker_down(exc: BaseException) -> bool:
    """Whether ``exc`` says the broker could not be reached (not a bug of ours)."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)):
        return True
    return type(exc).__module__.startswith(("psycopg", "psycopg_pool")) and (
        "connect" in str(exc).lower() or "pool" in type(exc).__name__.lower()
    )


def dashboard_routes(
    registry: Registry, queue_set: QueueSet, tz: tzinfo, auth: bool
) -> tuple[list[BaseRoute], Any]:
    """Every page, the chart data and the actions of the dashboard; and the handler that
    turns an exception into an error page."""
    env = environment()
    version = str(int(time.time()))

    def render(request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        query = request.query_params
        page = env.get_template(name).render(
            base=base,
            path=request.url.path,
            here=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
            page=name.removesuffix(".html"),
            flash=query.get("msg"),
            flash_kind=query.get("kind", "ok"),
            version=version,
            auth=auth,
            tz=tz,
            **context,
        )
        return HTMLResponse(page, status_code=code, headers={"Cache-Control": "no-store"})

    async def form(request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", "replace")
        return dict(parse_qsl(body, keep_blank_values=True))

    async def overview_page(request: Request) -> Response:
        view = await data.overview(registry, queue_set, request.query_params.get("window", ""))
        return render(request, "overview.html", view=view, windows=list(data.WINDOWS))

    async def trends_page(request: Request) -> Response:
        label, _ = data.window_seconds(request.query_params.get("window"))
        by = "domain" if request.query_params.get("by") == "domain" else "queue"
        await queue_set.connect()
        return render(
            request,
            "trends.html",
            window=label,
            windows=list(data.WINDOWS),
            by=by,
            trends=any(store is not None for store in queue_set.stores.values()),
        )

    async def trends_api(request: Request) -> Response:
        result = await data.trend_series(
            registry,
            queue_set,
            request.query_params.get("window", ""),
            request.query_params.get("by", "queue"),
        )
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    async def schedules_page(request: Request) -> Response:
        crons = await data.schedules(registry, queue_set, tz)
        return render(request, "schedules.html", crons=crons, now=time.time())

    async def jobs_page(request: Request) -> Response:
        query = request.query_params
        text = (query.get("q") or "").strip()
        status = query.get("status") or "failed"
        if status not in data.STATUSES:
            status = "failed"
        task = query.get("task") or None
        queue = query.get("queue") or None
        if text:
            found = await data.find_job(queue_set, text)
            if found is not None:
                where = f"{quote(found[0], safe='')}/{quote(found[1].key)}"
                return RedirectResponse(
                    f"{request.scope.get('root_path', '')}/jobs/{where}", status_code=303
                )
            if text in registry.tasks:
                task, status = text, "all"
        listing = await data.list_jobs(queue_set, status=status, task=task, queue=queue)
        return render(
            request,
            "jobs.html",
            listing=listing,
            status=status,
            statuses=data.STATUSES,
            task=task,
            queue=queue,
            queues=list(queue_set.queues),
            q=text,
            not_found=text if text and task != text else None,
        )

    async def job_page(request: Request) -> Response:
        name, key = request.path_params["queue"], request.path_params["key"]
        queue = queue_set.queues.get(name)
        job = None
        if queue is not None:
            await queue_set.connect()
            job = await queue.job(key)
        if job is None:
            return render(request, "missing.html", code=404, what=f"job {key} of queue {name}")
        spec = registry.tasks.get(job.function)
        return render(
            request,
            "job.html",
            job=job,
            queue=name,
            domain=spec.domain if spec else None,
            finished=job.status in (Status.COMPLETE, Status.FAILED, Status.ABORTED),
        )

    def confirm(request: Request, fields: Mapping[str, str], question: str) -> Response:
        cancel = safe_next(fields.get("next"), request.scope.get("root_path", ""))
        return render(
            request,
            "confirm.html",
            question=question,
            fields=dict(fields),
            # the path as sent (still percent-encoded), so any job key posts back intact
            action=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
            cancel=cancel,
        )

    async def job_action(request: Request) -> Response:
        fields = await form(request)
        name, key = request.path_params["queue"], request.path_params["key"]
        action = request.path_params["action"]
        base = request.scope.get("root_path", "")
        target = safe_next(fields.get("next"), base)
        run = JOB_ACTIONS.get(action)
        queue = queue_set.queues.get(name)
        if run is None or queue is None:
            return render(request, "missing.html", code=404, what=f"action {action}")
        if fields.get("confirmed") != "1":
            return confirm(request, fields, f"{action.capitalize()} job {key} of queue {name}?")
        await queue_set.connect()
        job = await queue.job(key)
        if job is None:
            return RedirectResponse(with_message(target, f"job {key} is gone", "bad"), 303)
        refused = await run(queue, job)
        if refused:
            return RedirectResponse(with_message(target, refused, "bad"), 303)
        if action == "delete" and f"/jobs/{name}/" in target:
            target = base + "/jobs"
        past = {"retry": "retried", "abort": "aborted", "delete": "deleted"}[action]
        return RedirectResponse(with_message(target, f"job {key} {past}"), 303)

    async def task_action(request: Request) -> Response:
        fields = await form(request)
        task, action = request.path_params["task"], request.path_params["action"]
        base = request.scope.get("root_path", "")
        target = safe_next(fields.get("next"), base)
        if action not in ("retry", "delete") or task not in registry.tasks:
            return render(request, "missing.html", code=404, what=f"task {task}")
        listing = await data.list_jobs(queue_set, status="failed", task=task, limit=BULK_LIMIT)
        if fields.get("confirmed") != "1":
            question = f"{action.capitalize()} all {listing.matched} failed jobs of {task}?"
            return confirm(request, fields, question)
        done = 0
        for name, job in listing.jobs:
            # a job that changed since it was listed is left alone
            refused = await JOB_ACTIONS[action](queue_set.queues[name], job)
            done += refused is None
        past = "retried" if action == "retry" else "deleted"
        return RedirectResponse(with_message(target, f"{done} failed job(s) of {task} {past}"), 303)

    async def cron_action(request: Request) -> Response:
        fields = await form(request)
        task, action = request.path_params["task"], request.path_params["action"]
        base = request.scope.get("root_path", "")
        target = safe_next(fields.get("next"), base + "/schedules")
        spec = next((c for c in registry.crons if c.name == task), None)
        if spec is None or action not in ("pause", "resume"):
            return render(request, "missing.html", code=404, what=f"cron job {task}")
        if fields.get("confirmed") != "1":
            return confirm(request, fields, f"{action.capitalize()} cron job {task}?")
        await queue_set.connect()
        refused = await pause_cron(queue_set.queues[spec.queue], task, action == "pause")
        if refused:
            return RedirectResponse(with_message(target, refused, "bad"), 303)
        past = "paused" if action == "pause" else "resumed"
        return RedirectResponse(with_message(target, f"cron job {task} {past}"), 303)

    async def error_page(request: Request, exc: Exception) -> Response:
        if broker_down(exc):
            where = ", ".join(sorted({describe(q) for q in queue_set.queues.values()}))
            message = f"The broker ({where}) does not answer: {type(exc).__name__}: {exc}"
            code = 503
        else:
            logger.error("dashboard page %s failed", request.url.path, exc_info=exc)
            message = f"This page failed ({type(exc).__name__}); the server log has the details"
            code = 500
        if request.url.path.startswith(request.scope.get("root_path", "") + "/api/"):
            return JSONResponse({"error": message}, status_code=code)
        return render(request, "error.html", code=code, message=message, down=code == 503)

    routes: list[BaseRoute] = [
        Route("/", overview_page),
        Route("/trends", trends_page),
        Route("/schedules", schedules_page),
        Route("/jobs", jobs_page),
        Route("/jobs/{queue}/{key:path}", job_page),
        Route("/api/dashboard/trends", trends_api),
        Route("/actions/jobs/{queue}/{key:path}/{action}", job_action, methods=["POST"]),
        Route("/actions/tasks/{task}/{action}", task_action, methods=["POST"]),
        Route("/actions/crons/{task}/{action}", cron_action, methods=["POST"]),
    ]
    return routes, error_page
