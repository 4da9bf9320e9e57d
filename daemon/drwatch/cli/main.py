"""Command line: run, check, check-config, status, seal, seal-keygen, attest, ack, demo, golden.

Exit codes: 0 ok/compliant; 1 a rule fails or a check failed (bad backup); 2 something could not be
checked; 69 a service drwatch needs (store, listen port) is unavailable; 78 invalid configuration.
``seal`` also: 65 nothing but entries that are not regular files, 66 an unreadable input (or ``--sign`` key),
73 the seal cannot be written (nothing is written in each case).

Each command lives in its own module (check, run, seal, records); ``parser`` builds the command line.
"""

from __future__ import annotations

import os
import sys

from drwatch.cli.parser import build_parser
from drwatch.core.errors import EXIT_OK

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `drwatch status | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
