"""``editbench report`` and ``editbench publish``: read result stores, write tables, plots and a site.

Being built under the reports issue; until then the commands say so and exit non-zero.
"""

from __future__ import annotations

import click


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--html", type=click.Path(), default=None, help="Write an HTML report into this folder.")
def report(results: tuple[str, ...], html: str | None) -> None:
    """Render one or more result stores as tables and plots."""
    raise click.ClickException("editbench report is not available yet")


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--site", type=click.Path(), required=True, help="Folder for the static site.")
def publish(results: tuple[str, ...], site: str) -> None:
    """Build the static leaderboard site from result stores."""
    raise click.ClickException("editbench publish is not available yet")
