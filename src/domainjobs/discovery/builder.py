"""``discover()``: find every domain, import its jobs modules, apply the rules, and return
an immutable ``Registry`` — or raise one ``DiscoveryError`` listing every problem found."""

from __future__ import annotations

import inspect
import os
import pkgutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from croniter import croniter
from saq.job import CronJob

from domainjobs.config import Settings, load_settings
from domainjobs.discovery.domains import DomainLocation, find_domains
from domainjobs.discovery.loader import (
    display_path,
    import_module,
    import_tree,
    module_exists,
    module_file,
)
from domainjobs.discovery.marks import Mark
from domainjobs.discovery.rules import (
    Fallback,
    Found,
    context_problem,
    line_of,
    package_owner,
    select,
)
from domainjobs.errors import DiscoveryError, Problem
from domainjobs.options import (
    CRON_JOB_OPTIONS,
    DOMAIN_DEFAULT_KEYS,
    JOB_OPTIONS,
    option_errors,
)
from domainjobs.registry import (
    DEFAULT_QUEUE,
    CronSpec,
    Domain,
    HookSpec,
    Origin,
    Registry,
    RegistryOrRoots,
    TaskSpec,
)

DEFAULT_ROOTS = ("app.domain",)

HOOK_KINDS = ("startup", "shutdown", "before_job", "after_job")

#: jobs sub-module name -> what its unmarked functions count as
KIND_MODULES: dict[str, Fallback] = {
    "tasks": "task",
    "scheduled": None,
    "startup": "startup",
    "shutdown": "shutdown",
}


@dataclass
class _PendingCron:
    """A ``scheduled_tasks`` entry, resolved once every domain's tasks are known."""

    job: object
    index: int
    module: ModuleType
    domain: Domain


@dataclass(frozen=True)
class _OtherPackages:
    """The packages of every domain but ``own``: a container answering in constant time
    (a per-domain tuple of the others made discovery quadratic in the number of domains)."""

    domain_of: dict[str, str]  # package -> domain name
    own: str

    def __contains__(self, package: object) -> bool:
        return isinstance(package, str) and self.domain_of.get(package, self.own) != self.own


@dataclass
class _Builder:
    """Accumulates what discovery finds, and every problem, across all domains."""

    problems: list[Problem] = field(default_factory=list)
    domains: list[Domain] = field(default_factory=list)
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    task_by_function: dict[int, TaskSpec] = field(default_factory=dict)
    crons: list[CronSpec] = field(default_factory=list)
    startup: list[HookSpec] = field(default_factory=list)
    shutdown: list[HookSpec] = field(default_factory=list)
    before_job: list[HookSpec] = field(default_factory=list)
    after_job: list[HookSpec] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    pending_crons: list[_PendingCron] = field(default_factory=list)
    package_domains: dict[str, str] = field(default_factory=dict)
    hook_functions: set[tuple[str, int]] = field(default_factory=set)

    # -- helpers ----------------------------------------------------------------------

    def origin(self, domain: Domain, function: Callable[..., Any]) -> Origin:
        module = getattr(function, "__module__", None) or domain.jobs_module
        try:
            file = inspect.getsourcefile(inspect.unwrap(function))
        except TypeError:
            file = None
        return Origin(domain.name, module, display_path(file), line_of(function))

    def problem(self, message: str, where: Origin) -> None:
        self.problems.append(Problem(message, where.domain, where.file, where.line))

    # -- tasks and hooks -------------------------------------------------------------

    def add_task(
        self, domain: Domain, function: Callable[..., Any], mark: Mark | None
    ) -> TaskSpec | None:
        known = self.task_by_function.get(id(function))
        if known is not None and known.domain == domain.name:
            return known  # re-exported or found by two rules: registered once
        where = self.origin(domain, function)
        reason = context_problem(function, f"task {function.__name__!r}")
        if reason:
            self.problem(reason, where)
            return None
        allowed = CRON_JOB_OPTIONS if mark and mark.kind == "cron" else tuple(JOB_OPTIONS)
        errors = option_errors(mark.options, allowed) if mark else []
        for error in errors:
            self.problem(
                f"@{mark.kind if mark else 'task'} on {function.__name__!r}: {error}", where
            )
        if errors:
            return None
        name = (mark.name if mark else None) or f"{domain.name}.{function.__name__}"
        options = {**{k: v for k, v in domain.defaults.items() if k != "queue"}}
        options.update(mark.options if mark else {})
        spec = TaskSpec(
            name=name,
            function=function,
            domain=domain.name,
            queue=(mark.queue if mark else None) or domain.queue,
            options=options,
            origin=where,
            signature=inspect.signature(function),
        )
        clash = self.tasks.get(name)
        if clash is not None:
            self.problem(
                f"two tasks are named {name!r}: {clash.origin} (domain '{clash.domain}') and "
                f"{where}; rename one (@task(name=...)) or the function",
                where,
            )
            return None
        self.tasks[name] = spec
        self.task_by_function[id(function)] = spec
        return spec

    def add_hook(
        self, domain: Domain, function: Callable[..., Any], kind: str, all_domains: bool = False
    ) -> None:
        if (kind, id(function)) in self.hook_functions:
            return
        where = self.origin(domain, function)
        label = kind.replace("_", "-")
        reason = context_problem(function, f"{label} hook {function.__name__!r}")
        if reason:
            self.problem(reason, where)
            return
        name = f"{domain.name}.{function.__name__}"
        hook = HookSpec(kind, name, function, domain.name, where, all_domains)
        getattr(self, kind).append(hook)
        self.hook_functions.add((kind, id(function)))

    def add_cron(
        self,
        task: TaskSpec,
        expression: str,
        *,
        unique: bool,
        kwargs: Any,
        options: dict[str, Any],
        where: Origin,
    ) -> None:
        if not isinstance(expression, str) or not croniter.is_valid(expression):
            self.problem(
                f"invalid cron expression {expression!r} for {task.name!r}: "
                f"{_cron_fault(expression)}",
                where,
            )
            return
        if kwargs is not None and not isinstance(kwargs, dict):
            self.problem(f"cron kwargs for {task.name!r} must be a dict, got {kwargs!r}", where)
            return
        # a scheduled run gets the task's own defaults (@task, job_defaults) unless the
        # schedule sets them; SAQ's CronJob carries only these four options
        inherited = {k: v for k, v in task.options.items() if k in CRON_JOB_OPTIONS}
        merged = {**inherited, **options}
        self.crons.append(CronSpec(task, expression, unique, kwargs, merged, where))

    # -- one module's findings -------------------------------------------------------

    def take(self, domain: Domain, module: ModuleType, fallback: Fallback, found: Found) -> None:
        for function, mark in found.marked:
            if mark.kind in HOOK_KINDS:
                self.add_hook(domain, function, mark.kind, mark.all_domains)
                continue
            spec = self.add_task(domain, function, mark)
            if spec is not None and mark.kind == "cron":
                self.add_cron(
                    spec,
                    mark.cron or "",
                    unique=mark.unique,
                    kwargs=mark.cron_kwargs,
                    options=dict(mark.options),
                    where=spec.origin,
                )
        for function in found.unmarked:
            if fallback == "task":
                self.add_task(domain, function, None)
            elif fallback in ("startup", "shutdown"):
                self.add_hook(domain, function, fallback)
        for index, job in found.scheduled_tasks:
            self.pending_crons.append(_PendingCron(job, index, module, domain))

    # -- scheduled_tasks, once every task is known -------------------------------------

    def resolve_crons(self) -> None:
        for pending in self.pending_crons:
            self.resolve_cron(pending)

    def resolve_cron(self, pending: _PendingCron) -> None:
        module, domain = pending.module, pending.domain
        file = display_path(getattr(module, "__file__", None))
        where = Origin(domain.name, module.__name__, file, None)
        job = pending.job
        if not isinstance(job, CronJob):
            self.problem(
                f"scheduled_tasks[{pending.index}] is a {type(job).__name__}, not a "
                "saq.CronJob; write CronJob(function, cron='...')",
                where,
            )
            return
        where = Origin(domain.name, module.__name__, file, _line_of_text(module, job.cron))
        function = job.function
        label = getattr(function, "__qualname__", repr(function))
        spec = self.task_by_function.get(id(function))
        if spec is not None and spec.domain != domain.name:
            self.problem(
                f"scheduled_tasks schedules {spec.name!r}, a task of domain "
                f"'{spec.domain}'; schedule it from its own domain's scheduled module",
                where,
            )
            return
        if spec is None:
            owner = getattr(function, "__module__", None)
            foreign = self.foreign_owner(domain, owner)
            if foreign is not None:
                self.problem(
                    f"scheduled_tasks schedules {label!r}, defined in domain '{foreign}'; "
                    "schedule it from its own domain's scheduled module",
                    where,
                )
                return
            if owner != module.__name__ or not inspect.isfunction(function):
                self.problem(
                    f"scheduled_tasks schedules {label!r}, which is neither a task of "
                    f"domain '{domain.name}' nor a function defined in {module.__name__}; "
                    "define it there or mark it with @task in the domain's tasks",
                    where,
                )
                return
            spec = self.add_task(domain, function, None)
            if spec is None:
                return
        options = {k: getattr(job, k) for k in CRON_JOB_OPTIONS if getattr(job, k) is not None}
        self.add_cron(
            spec, job.cron, unique=job.unique, kwargs=job.kwargs, options=options, where=where
        )

    def warn_empty_domains(self) -> None:
        """A warning for each domain whose jobs contribute nothing at all."""
        used = {spec.domain for spec in self.tasks.values()}
        for hooks in (self.startup, self.shutdown, self.before_job, self.after_job):
            used.update(hook.domain for hook in hooks)
        for domain in self.domains:
            if domain.name not in used:
                file = display_path(module_file(domain.jobs_module))
                self.warnings.append(
                    Problem(
                        f"{domain.jobs_module} defines no task, cron job or hook: put tasks "
                        "in jobs/tasks.py (or name them in jobs/__init__.py's __all__, or "
                        "mark them with @task), or remove the jobs module",
                        domain.name,
                        file,
                    )
                )

    def foreign_owner(self, domain: Domain, module_name: str | None) -> str | None:
        if not module_name:
            return None
        package = package_owner(module_name, _OtherPackages(self.package_domains, domain.name))
        return self.package_domains[package] if package is not None else None


CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week", "second")
CRON_RANGES = ("0-59", "0-23", "1-31", "1-12 or jan-dec", "0-6 or sun-sat", "0-59")


def _cron_fault(expression: object) -> str:
    """What is wrong with an invalid cron expression, and what a valid one looks like."""
    form = (
        "use five fields (minute hour day month weekday, e.g. '*/5 * * * *') or six with "
        "seconds last"
    )
    if not isinstance(expression, str):
        return f"it is a {type(expression).__name__}, not a string; {form}"
    fields = expression.split()
    if len(fields) not in (5, 6):
        return f"it has {len(fields)} field(s); {form}"
    for index, text in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[index] = text
        if not croniter.is_valid(" ".join(probe)):
            return (
                f"the {CRON_FIELDS[index]} field {text!r} is out of range or malformed "
                f"(allowed: {CRON_RANGES[index]}, '*', lists, ranges and '*/step')"
            )
    return f"the fields do not combine into a schedule; {form}"


def _line_of_text(module: ModuleType, text: str) -> int | None:
    """The first line of ``module``'s source containing the literal ``text``."""
    file = getattr(module, "__file__", None)
    if not file or not isinstance(text, str):
        return None
    try:
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if repr(text) in line or f'"{text}"' in line:
                    return number
    except OSError:
        return None
    return None


def _load_domain(location: DomainLocation, builder: _Builder) -> None:
    problems = builder.problems
    jobs, problem = import_module(location.jobs_module, location.name)
    if problem is not None:
        problems.append(problem)
        return
    assert jobs is not None
    file = display_path(getattr(jobs, "__file__", None))
    defaults = getattr(jobs, "job_defaults", None) or {}
    if not isinstance(defaults, dict):
        problems.append(
            Problem(
                f"job_defaults must be a dict, got {type(defaults).__name__}",
                location.name,
                file,
            )
        )
        defaults = {}
    errors = option_errors(defaults, DOMAIN_DEFAULT_KEYS)
    for error in errors:
        problems.append(Problem(f"job_defaults: {error}", location.name, file))
    domain = Domain(
        name=location.name,
        package=location.package,
        jobs_module=location.jobs_module,
        queue=defaults.get("queue") or DEFAULT_QUEUE,
        defaults={} if errors else dict(defaults),
    )
    builder.domains.append(domain)
    foreign = _OtherPackages(builder.package_domains, location.name)

    if not hasattr(jobs, "__path__"):  # the single-module form: jobs.py holds every kind
        found = select(
            jobs, "task", domain=domain.name, foreign_packages=foreign, problems=problems
        )
        builder.take(domain, jobs, "task", found)
        return
    # the package form: only the four kind modules count; anything else in jobs/ is private
    folders = list(jobs.__path__)
    present = {info.name for info in pkgutil.iter_modules(folders)}
    kinds = [
        kind
        for kind in KIND_MODULES
        # one listing of jobs/ rather than a path search per kind; a folder without
        # __init__.py (a namespace package) is not listed: the import system decides then
        if kind in present
        or (
            any(os.path.isdir(os.path.join(folder, kind)) for folder in folders)
            and module_exists(f"{location.jobs_module}.{kind}")
        )
    ]
    # a jobs package with no kind module is read like jobs.py: its __init__ (its __all__,
    # re-exports included, or its own public functions) holds the tasks
    root_fallback: Fallback = None if kinds else "task"
    jobs_root_found = select(
        jobs, root_fallback, domain=domain.name, foreign_packages=foreign, problems=problems
    )
    builder.take(domain, jobs, root_fallback, jobs_root_found)
    for kind in kinds:
        fallback = KIND_MODULES[kind]
        name = f"{location.jobs_module}.{kind}"
        for module in import_tree(name, domain.name, problems):
            found = select(
                module, fallback, domain=domain.name, foreign_packages=foreign, problems=problems
            )
            builder.take(domain, module, fallback, found)


def discover(
    roots: str | Sequence[str] | None = None,
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    entry_points: bool = True,
) -> Registry:
    """Discover every jobs domain under ``roots`` (default ``"app.domain"``).

    ``roots`` may be one dotted package name, a comma-separated list, or a sequence.
    Installed packages add domains through the ``domainjobs.domains`` entry-point group
    (``entry_points=False`` turns that off). ``include``/``exclude`` select domains by name
    pattern. Raises ``DiscoveryError`` listing every problem when anything is wrong.
    """
    root_list = split_roots(roots)
    builder = _Builder()
    locations = find_domains(
        root_list,
        include=tuple(include),
        exclude=tuple(exclude),
        use_entry_points=entry_points,
        problems=builder.problems,
    )
    builder.package_domains = {loc.package: loc.name for loc in locations}
    for location in locations:
        _load_domain(location, builder)
    builder.resolve_crons()
    if builder.problems:
        raise DiscoveryError(builder.problems)
    builder.warn_empty_domains()
    return Registry(
        domains=tuple(builder.domains),
        tasks=builder.tasks,
        crons=tuple(builder.crons),
        startup=tuple(builder.startup),
        shutdown=tuple(reversed(builder.shutdown)),
        roots=tuple(root_list),
        # around a job the hooks nest: after-job hooks run in the reverse order
        before_job=tuple(builder.before_job),
        after_job=tuple(reversed(builder.after_job)),
        warnings=tuple(builder.warnings),
    )


def split_roots(roots: str | Sequence[str] | None) -> list[str]:
    """Normalise ``roots`` to a list of dotted names (commas separate several)."""
    if roots is None:
        return list(DEFAULT_ROOTS)
    items = [roots] if isinstance(roots, str) else list(roots)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def discover_configured(settings: Settings | None = None) -> Registry:
    """``discover()`` with the configured roots, domain filters and entry points (``settings``,
    else the settings loaded from the environment and pyproject.toml)."""
    settings = settings or load_settings()
    return discover(
        settings.roots,
        include=settings.include,
        exclude=settings.exclude,
        entry_points=settings.entry_points,
    )


def resolve_registry(registry_or_roots: RegistryOrRoots) -> Registry:
    """A registry as given, or discovered from roots (default: the configured roots)."""
    if isinstance(registry_or_roots, Registry):
        return registry_or_roots
    if registry_or_roots is None:
        return discover_configured()
    return discover(registry_or_roots)
