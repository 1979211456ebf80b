"""``editbench report``, ``editbench publish`` and ``editbench samples``: read result stores, write
tables, plots and a site, or print what the edited models answered.

Both only read the stores (HELM's split between computing and presenting): point them at a
folder that a run is still writing and they show the checkpoints committed so far. pandas, seaborn
and the templates are imported inside the commands, so ``editbench --help`` does not pay for them.
"""

from __future__ import annotations

from pathlib import Path

import click

_RESULTS = click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
_SEED = click.option("--seed", type=int, default=0, show_default=True,
                     help="Seeds the bootstrap resampling of the confidence intervals.")


def _collect(results: tuple[Path, ...]):
    from .collect import collect

    try:
        return collect(results)
    except (FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@_RESULTS
@click.option("--html", type=click.Path(path_type=Path), default=None,
              help="Write the HTML report (index.html, a page per run, plots, leaderboard.json) "
                   "into this folder.")
@click.option("--md", type=click.Path(path_type=Path, allow_dash=True), is_flag=False,
              flag_value="-", default=None,
              help="Write the leaderboard as Markdown to FILE, or to standard output when no FILE "
                   "is given.")
@click.option("--latex", "tex", type=click.Path(path_type=Path, allow_dash=True), is_flag=False,
              flag_value="-", default=None,
              help="Write the leaderboard as LaTeX tables (booktabs) to FILE, or to standard "
                   "output.")
@click.option("--csv", type=click.Path(path_type=Path, allow_dash=True), is_flag=False,
              flag_value="-", default=None,
              help="Write every leaderboard cell (mean, interval, mark) as CSV to FILE, or to "
                   "standard output.")
@_SEED
def report(results: tuple[Path, ...], html: Path | None, md: Path | None, tex: Path | None,
           csv: Path | None, seed: int) -> None:
    """Render one or more result stores (RESULTS folders) as a leaderboard with plots.

    With no output option, prints the Markdown leaderboard."""
    from ..core.outputs import check_output_file, check_pages_folder
    from .leaderboard import build_boards
    from .site import write_pages
    from .tables import csv_text, latex, markdown

    # every output is checked before anything is read or written (core/outputs.py)
    if html is not None:
        check_pages_folder(html, "--html")
    for path, option, fmt in ((md, "--md", "md"), (tex, "--latex", "latex"), (csv, "--csv", "csv")):
        if path is not None and str(path) != "-":
            check_output_file(path, option, fmt)
    found = _collect(results)
    boards = build_boards(found, seed=seed)
    if html is not None:
        write_pages(found, html, site=False, seed=seed)
        click.echo(f"report: {html / 'index.html'}")
    for path, text in ((md, markdown), (tex, latex), (csv, csv_text)):
        if path is None:
            continue
        if str(path) == "-":  # a bare --md, --latex or --csv: standard output
            click.echo(text(boards), nl=False)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text(boards), encoding="utf-8")
        click.echo(f"wrote {path}", err=True)
    if html is None and md is None and tex is None and csv is None:
        click.echo(markdown(boards), nl=False)


@click.command()
@_RESULTS
@click.option("--site", type=click.Path(path_type=Path), required=True,
              help="Folder for the static site.")
@_SEED
def publish(results: tuple[Path, ...], site: Path, seed: int) -> None:
    """Build the static leaderboard site from result stores: index = leaderboard, a page per task
    and per run, plots, and leaderboard.json; ready for GitHub Pages."""
    from ..core.outputs import check_pages_folder
    from .site import write_pages

    check_pages_folder(site, "--site")
    pages = write_pages(_collect(results), site, site=True, seed=seed)
    click.echo(f"site: {site / 'index.html'} ({len(pages)} pages)")


@click.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--method", required=True, help="The method (its label in the run, e.g. ft-m).")
@click.option("--edits", "n_edits", type=int, required=True,
              help="The checkpoint: the edit count at which the answers were generated.")
@click.option("--failed", is_flag=True,
              help="Only answers whose generated verdict fails (gen FAIL).")
@click.option("--run", "run_id", default=None,
              help="Only this run of the store (default: every run that has the method).")
def samples(results: Path, method: str, n_edits: int, failed: bool, run_id: str | None) -> None:
    """Print what the edited model answered at every scored prompt at one checkpoint (the scored
    sample where the run had --eval-sample), beside the target, the unedited model's answer and
    both verdicts, one line per prompt.

    \b
    gen: the greedy answer's exact match with the target after normalisation (lower case,
         articles and outer punctuation dropped); at a neighbourhood prompt, with the
         unedited model's answer (the generated specificity).
    tf:  teacher-forced: passes when every target token is the model's top-1 (token
         accuracy 1.0); at a neighbourhood prompt, when every answer token's top-1 is the
         unedited model's (agreement 1.0, the headline specificity).
    Answers are shown with outer whitespace trimmed and control characters escaped."""
    from .samples import format_samples, select_samples

    try:
        frame = select_samples(results, method, n_edits, failed=failed, run_id=run_id)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_samples(frame, failed=failed), nl=False)
