"""Command line: parse options, build the configuration, call the engine, map the outcome to an exit code."""

from __future__ import annotations

import click

from sipload import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sipload")
def main() -> None:
    """sipload: SIP registration load tester and registrar simulator."""
