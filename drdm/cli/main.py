"""The ``drdm`` program: one parser, one place where errors become exit codes.

Bad input ends with exit code 2 and one line on stderr (``drdm: error: ...``): every
``ValueError`` (the package's :class:`~drdm.data.DataError`,
:class:`~drdm.checkpoint.CheckpointError` and :class:`UsageError` among them) and every
``OSError`` a command raises; nothing partial is left behind. A long run stopped by a full disk
or lack of memory (:class:`drdm.faults.RunStopped`) prints one line and exits with 75; re-running
the command resumes. Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import sys

from ..faults import EXIT_STOPPED, RunStopped, exhausted
from . import augment, experiment, fewshot, synth, table1, train
from .common import command_parser, line

__all__ = ["build_parser", "main"]

#: one module per command: ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` and ``cmd_<name>(args)``
COMMANDS = (train, augment, synth, table1, experiment, fewshot)


def build_parser() -> argparse.ArgumentParser:
    """``drdm`` with its sub-commands ``train | augment | synth | table1 | experiment | fewshot``."""
    ap = argparse.ArgumentParser(prog="drdm", description="Deformation-Recovery Diffusion Model")
    sub = ap.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        name = command.__name__.rsplit(".", 1)[-1]
        p = command_parser(sub, name, command.HELP, command.DESCRIPTION)
        command.add_arguments(p)
        p.set_defaults(func=getattr(command, f"cmd_{name}"))
    return ap


def main(argv=None) -> int:
    """Run ``drdm`` with ``argv`` (default: the process's arguments); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RunStopped as e:
        print(f"drdm: {line(e)}", file=sys.stderr)
        return EXIT_STOPPED
    except (MemoryError, OSError) as e:
        if exhausted(e) is None:
            print(f"drdm: error: {line(e)}", file=sys.stderr)
            return 2
        print(f"drdm: stopped, {exhausted(e)}; finished outputs are kept, re-run the same command to resume",
              file=sys.stderr)
        return EXIT_STOPPED
    except ValueError as e:
        print(f"drdm: error: {line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("drdm: interrupted", file=sys.stderr)
        return 130
