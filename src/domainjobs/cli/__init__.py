"""The ``domainjobs`` command line (``python -m domainjobs``): parse, dispatch, and turn
every expected error into one sentence on stderr with the right exit code (docs/cli.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from domainjobs.cli.parser import build_parser
from domainjobs.errors import ConfigError, DiscoveryError, DomainJobsError, ExitCode


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        status: int = args.handler(args)
    except DiscoveryError as exc:
        if debug:
            for problem in exc.problems:
                if problem.traceback:
                    print(problem.traceback, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        if not debug and any(problem.traceback for problem in exc.problems):
            print("(run again with --debug for the tracebacks)", file=sys.stderr)
        return ExitCode.USAGE
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except DomainJobsError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # the reader went away (``list --json | head``): stop quietly, as ls or git do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.BROKEN_PIPE
    except Exception as exc:
        if debug:
            raise
        print(
            f"error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return ExitCode.FAILURE
    return status


def console_main() -> None:
    """Entry point of the ``domainjobs`` console script."""
    sys.exit(main())
