"""Stage 1 — discovery: find the domains, import their ``jobs`` modules, apply the rules of
what counts as what, and build the immutable ``Registry``.

- ``marks``: the decorators users write (``@task``, ``@cron``, ``@on_startup``, ``@on_shutdown``).
- ``domains``: which packages are domains (roots, entry points, include/exclude).
- ``loader``: safe imports; a module that raises becomes a ``Problem`` with file and line.
- ``rules``: inside one jobs module, what is a task, a cron job, a hook.
- ``builder``: ``discover()``, tying the above together.

Internal: import the public names from ``domainjobs``.
"""
