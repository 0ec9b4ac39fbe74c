"""Parser, logging set-up and error handling shared by every subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from .._version import __version__
from ..errors import AelabError
from . import compress, demo, detect, encode, fit, info, restore, sample

COMMANDS = (fit, encode, sample, info, detect, compress, restore, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aelab",
        description="Train autoencoders on your tables and images, and use them.",
    )
    parser.add_argument("--version", action="version", version=f"aelab {__version__}")
    add_global_options(parser, argparse.SUPPRESS)
    parser.set_defaults(debug=False, verbose=False, quiet=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for command in COMMANDS:
        command.add_parser(subparsers)
    for child in _subparsers(parser):
        add_global_options(child, argparse.SUPPRESS)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += [child, *_subparsers(child)]
    return found


def add_global_options(parser: argparse.ArgumentParser, default: object) -> None:
    """Add --debug, -v and -q; subcommands repeat them so they work after it too."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show full tracebacks for errors",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="log the losses of every epoch",
    )
    verbosity.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="no progress bars or summaries",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    args.progress = not args.quiet and sys.stderr.isatty()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.run(args) or 0)
    except BrokenPipeError:
        # The reader of our output left (``aelab info --json | head``). Point
        # stdout at /dev/null so the interpreter's final flush stays quiet, and
        # exit as a process killed by SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
    except (AelabError, OSError) as err:
        if args.debug:
            raise
        message = str(err) if isinstance(err, AelabError) else _os_error(err)
        print(f"aelab {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"aelab {args.command}: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    sys.exit(main())


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="aelab: %(message)s", stream=sys.stderr)
    logging.getLogger("aelab").setLevel(level)


_shown_warnings: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    # Ensemble members and repeated passes raise the same warning; print it once.
    text = str(message)
    if text not in _shown_warnings:
        _shown_warnings.add(text)
        print(f"aelab: warning: {text}", file=sys.stderr)


def _os_error(err: OSError) -> str:
    where = f" {err.filename!r}" if err.filename else ""
    return f"{err.strerror or err}{where}"
