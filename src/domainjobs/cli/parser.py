"""The argument parser: shared options, and one sub-command per module of this package."""

from __future__ import annotations

import argparse
import importlib.metadata

from domainjobs import __version__
from domainjobs.cli import broker, check, enqueue, listing, run, status
from domainjobs.cli.common import common_options

#: Each command module has ``register(subparsers, common)``; add new commands here.
COMMANDS = (run, listing, check, broker, enqueue, status)

EPILOG = """\
examples:
  python -m domainjobs check                       # validate every domain (CI, no broker)
  python -m domainjobs list --json                 # what was discovered, as JSON
  python -m domainjobs run --url redis://localhost:6379
  python -m domainjobs run -q mail -q default --concurrency 20

configuration precedence: flag > DOMAINJOBS_* environment > [tool.domainjobs] in
pyproject.toml > default. Exit codes: 0 ok, 1 runtime failure, 2 usage/discovery/config error.
"""


def installed_version() -> str:
    """The installed distribution's version (the package's own when not installed)."""
    try:
        return importlib.metadata.version("domainjobs")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The whole ``domainjobs`` parser."""
    parser = argparse.ArgumentParser(
        prog="domainjobs",
        description="Background jobs discovered from app/domain/<name>/jobs/, run as SAQ workers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"domainjobs {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    for command in COMMANDS:
        command.register(subparsers, common)
    return parser
