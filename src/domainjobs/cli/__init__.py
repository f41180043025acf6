"""The ``domainjobs`` command line (``python -m domainjobs``): parse, dispatch, and turn
every expected error into one sentence on stderr with the right exit code (DESIGN §4)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from domainjobs.cli.parser import build_parser
from domainjobs.errors import ConfigError, DiscoveryError, DomainJobsError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a command ended by SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        status: int = args.handler(args)
    except DiscoveryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DomainJobsError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``list --json | head``): stop quietly, as ls or git do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if debug:
            raise
        print(
            f"error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return status


def console_main() -> None:
    """Entry point of the ``domainjobs`` console script."""
    sys.exit(main())
