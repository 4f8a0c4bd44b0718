"""`modellens triage`: from a latency spike in Prometheus to its exemplar traces in Tempo and their lines in Loki."""

from __future__ import annotations

import argparse
import os
import sys
import time

from service.triage.options import Options, OptionsError, add_arguments

__all__ = ["add_arguments", "main"]


def main(args: argparse.Namespace) -> int:
    """Run triage for parsed `triage` arguments: 0 when a report was printed (even an empty one); 2 for a usage
    error or when Prometheus cannot answer."""
    from service.triage.console import run_console
    from service.triage.run import run  # requests is only imported when triage actually runs

    try:
        options = Options.from_args(args, os.environ, time.time())
    except OptionsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return run_console(options) if options.console else run(options)
