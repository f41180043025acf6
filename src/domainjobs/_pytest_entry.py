"""The ``pytest11`` entry point of domainjobs. It does nothing until a project opts in to
``domainjobs.testing``'s fixtures, in any of these ways:

- ``pytest -p domainjobs.testing`` (or ``addopts = "-p domainjobs.testing"``);
- ``pytest_plugins = ["domainjobs.testing"]`` in a ``conftest.py``;
- importing ``domainjobs.testing`` from a ``conftest.py`` or a test module.

Opting in registers ``domainjobs.testing.plugin`` (the fixtures) with the running pytest.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

#: The name the fixtures plugin is registered under.
FIXTURES_PLUGIN = "domainjobs.testing.plugin"

_config: pytest.Config | None = None


def activate(config: pytest.Config) -> None:
    """Register the fixtures plugin with ``config`` (once)."""
    if config.pluginmanager.has_plugin(FIXTURES_PLUGIN):
        return
    from domainjobs.testing import (
        plugin,  # only once a project opts in: keeps pytest start-up cheap
    )

    config.pluginmanager.register(plugin, FIXTURES_PLUGIN)


def activate_if_running() -> None:
    """Register the fixtures plugin if pytest is running (called when
    ``domainjobs.testing`` is imported)."""
    if _config is not None:
        activate(_config)


def pytest_configure(config: pytest.Config) -> None:
    """Remember the running pytest; opt in if ``domainjobs.testing`` is already imported."""
    global _config
    _config = config
    if "domainjobs.testing" in sys.modules:
        activate(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Forget the pytest run that ends."""
    global _config
    if _config is config:
        _config = None
