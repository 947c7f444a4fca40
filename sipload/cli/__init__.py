"""Command line: every click command of sipload, one module per command group, at the top of the layers.

    sipload run SCENARIO          sipload.cli.run         the load run (scenario -> engine -> results)
    sipload registrar             sipload.cli.registrar   the embedded registrar standalone, with the API emulators
    sipload check                 sipload.cli.check       a provider's status against what the endpoints know
    sipload report / compare      sipload.cli.report      over saved results directories

Nothing below this package imports it: the commands parse options, call the layers under them and map
the outcome to an exit code.
"""

from __future__ import annotations

import click

from sipload import __version__
from sipload.cli import check, registrar, report, run
from sipload.cli.options import Commands


@click.group(name="sipload", cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sipload")
def main() -> None:
    """sipload: SIP registration load tester and registrar simulator."""


main.add_command(registrar.registrar)
main.add_command(check.check)
main.add_command(report.report)
main.add_command(report.compare)
main.add_command(run.run)
