"""``editbench report``, ``publish``, ``compare``, ``samples``, ``submit`` and ``validate``: read
result stores (and submissions), write tables, plots and a site, compare two methods, print what
the edited models answered, or turn a run into a leaderboard submission and check one.

Both only read the stores (HELM's split between computing and presenting): point them at a
folder that a run is still writing and they show the checkpoints committed so far. pandas, seaborn
and the templates are imported inside the commands, so ``editbench --help`` does not pay for them.
"""

from __future__ import annotations

from pathlib import Path

import click

_RESULTS = click.argument("results", nargs=-1, type=click.Path(path_type=Path))
#: where ``editbench run`` writes by default (its ``--out``), read when no RESULTS are given
DEFAULT_RESULTS = Path("editbench-results")
#: where ``report --html`` without a folder writes
DEFAULT_REPORT = Path("editbench-report")
#: where ``publish`` without ``--site`` writes (apart from the report: the site's index is
#: another page, and one folder holding both would show whichever was written last)
DEFAULT_SITE = Path("editbench-site")
_SEED = click.option("--seed", type=int, default=0, show_default=True,
                     help="Seeds the bootstrap resampling of the confidence intervals.")


def _or_default(results: tuple[Path, ...]) -> tuple[Path, ...]:
    """The folders given, else the run's default ``--out`` (one line when it is not there)."""
    if results:
        return results
    if not (DEFAULT_RESULTS / "results.sqlite").is_file():
        raise click.ClickException(
            f"no RESULTS given and {DEFAULT_RESULTS}/ (where `editbench run` writes by default) "
            f"holds no results store here ({Path.cwd()}); name the folder: editbench "
            "report RESULTS")
    return (DEFAULT_RESULTS,)


def _collect(results: tuple[Path, ...]):
    from .collect import collect

    try:
        return collect(results)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@_RESULTS
@click.option("--html", type=click.Path(path_type=Path), is_flag=False,
              flag_value=str(DEFAULT_REPORT), default=None,
              help="Write the HTML report (index.html, a page per run, plots, leaderboard.json) "
                   f"into this folder ({DEFAULT_REPORT}/ when no folder is given).")
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
@click.option("--columns", "table_columns", default=None, metavar="A,B",
              help="Columns of the printed table (metric keys such as efficacy_acc, or headers "
                   "such as eff.(gen)); default: the protocol's headline metrics.")
@click.option("--all", "table_all", is_flag=True,
              help="Print every column at every edit count (wider than a terminal).")
@_SEED
def report(results: tuple[Path, ...], html: Path | None, md: Path | None, tex: Path | None,
           csv: Path | None, table_columns: str | None, table_all: bool, seed: int) -> None:
    """Render one or more result stores (RESULTS folders; default editbench-results, where a run
    writes) or submissions (files, or folders of them such as leaderboard/submissions) as a
    leaderboard with plots.

    With no output option, prints each board as the table `editbench run` ends with: each method
    at its last edit count with the headline columns, the earlier ones folded into retention and
    collapse point, within the terminal's width (at least 100 columns); `--md` alone prints the
    Markdown leaderboard."""
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
    found = _collect(_or_default(results))
    boards = build_boards(found, seed=seed)
    if html is not None:
        write_pages(found, html, site=False, seed=seed, boards=boards)
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
        _print_tables(boards, table_columns, table_all)


def _print_tables(boards, columns: str | None, everything: bool) -> None:
    from .summary import MARKS_NOTE, TableChoice, terminal_width

    table = TableChoice(columns, everything, terminal_width())
    if not boards:
        click.echo("(no runs stored)")
    for index, board in enumerate(boards):
        click.echo(("\n" if index else "") + f"{board.task}, protocol {board.protocol.label}")
        try:
            click.echo(table.render(board))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    if boards:
        click.echo(table.note(MARKS_NOTE))


@click.command()
@_RESULTS
@click.option("--site", type=click.Path(path_type=Path), default=DEFAULT_SITE,
              show_default=True, help="Folder for the static site.")
@_SEED
def publish(results: tuple[Path, ...], site: Path, seed: int) -> None:
    """Build the static leaderboard site from result stores (default editbench-results) or
    submissions (files, or folders of them such as leaderboard/submissions; each is validated
    first): index = leaderboard, a page
    per task and per run with its provenance, plots, and leaderboard.json; ready for GitHub
    Pages."""
    from ..core.outputs import check_pages_folder
    from .site import write_pages

    check_pages_folder(site, "--site")
    pages = write_pages(_collect(_or_default(results)), site, site=True, seed=seed)
    click.echo(f"site: {site / 'index.html'} ({len(pages)} pages)")


@click.command()
@click.argument("stores", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--methods", default=None, metavar="M1,M2",
              help="One store: the two methods to compare (B − A is M2 − M1). Two stores: the "
                   "method to compare between them (default: the one both hold).")
@click.option("--metrics", default=None, metavar="A,B",
              help="Stored metric keys to compare (default: the protocol's headline metrics, "
                   "teacher-forced and generated).")
@click.option("--html", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the comparison as a small HTML page to this file.")
@_SEED
def compare(stores: tuple[Path, ...], methods: str | None, metrics: str | None,
            html: Path | None, seed: int) -> None:
    """Compare two methods checkpoint by checkpoint: B − A of each headline metric with its 95%
    bootstrap interval (paired over the edits both scored). `compare A B` compares the method two
    result stores hold; `compare RESULTS --methods M1,M2` two methods of one store."""
    from ..core.outputs import check_output_file
    from .compare import choose, comparison_page, format_comparison
    from .compare import compare as difference

    if html is not None:
        check_output_file(html, "--html", "compare")
    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    keys = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    try:
        a, b = choose(list(stores), names)
        comparison = difference(a, b, keys, seed)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_comparison(comparison), nl=False)
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(comparison_page(comparison), encoding="utf-8")
        click.echo(f"wrote {html}", err=True)


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


@click.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--run", "run_ids", multiple=True,
              help="Submit only this run of the store (repeatable; default: every run).")
@click.option("--into", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the submission files (default: leaderboard/submissions under the "
                   "current folder, the repository's root).")
@click.option("--gzip", "compress", is_flag=True,
              help="Write NAME.json.gz (about a tenth of the size; for runs of thousands of edits) "
                   "instead of NAME.json, which a pull request's diff can show.")
def submit(results: Path, run_ids: tuple[str, ...], into: Path | None, compress: bool) -> None:
    """Turn each run of a result store (RESULTS folder) into a leaderboard submission: one JSON
    file with the per-edit scores, their summaries and hashes, and the run record (protocol,
    model and its revision, dataset hash, code version and identity, hardware, timings); no
    snapshots or answers. Nothing is overwritten. Open a pull request that adds the files; the
    leaderboard workflow validates them (editbench validate) and publishes them."""
    from ..core.store import load_results
    from .submission import DEFAULT_FOLDER, SubmissionError, build, file_name, problems, write

    into = into if into is not None else DEFAULT_FOLDER
    try:
        store = load_results(results)
        try:
            stored = list(store.runs()["run_id"])
        finally:
            store.close()
        chosen = list(run_ids) or stored
        docs = [build(results, run_id) for run_id in chosen]  # all or nothing: build every one
        refused = [f"run {doc['run']['run_id']}: {field}: {text}"
                   for doc in docs for field, text in problems(doc)]
        if refused:  # a store whose record does not hold together (edited by hand, or a bug)
            for line in refused:
                click.echo(line, err=True)
            raise SubmissionError(f"{results}: {len(refused)} problem(s) above; nothing was "
                                  "submitted")
        taken = [into / name for doc in docs
                 if (into / (name := file_name(doc, compress))).exists()]
        if taken:
            raise SubmissionError(f"{taken[0]} exists (its run was submitted before); remove it "
                                  "to submit the run again, or choose another --into")
        for doc in docs:
            path = write(doc, into, compress)
            click.echo(f"submitted run {doc['run']['run_id']} ({doc['run']['task']}, "
                       f"{len(doc['methods'])} methods): {path}")
    except (FileNotFoundError, RuntimeError, SubmissionError) as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check submissions (files, or folders of them such as leaderboard/submissions): the schema,
    the hashes, the summaries recomputed from the per-edit scores, the run id recomputed from its
    config, and that no two files hold one run. Prints one line per problem, naming the file and
    the field, and exits non-zero when there is any."""
    import os

    from .submission import duplicates, is_submission, submission_files
    from .submission import validate as check

    files: list[Path] = []
    lines: list[tuple[Path, str]] = []  # (file, line)
    for path in paths:
        if path.is_dir():
            files += submission_files(path)
        elif is_submission(path):
            files.append(path)
        elif path.exists():
            lines.append((path, f"{path}: not a submission (a .json or .json.gz file is "
                                "expected)"))
        else:
            lines.append((path, f"{path}: no such file or folder"))
    for path in files:
        found = check(path)
        lines += [(path, line) for line in found]
        if not found:
            click.echo(f"{path}: valid")
    lines += duplicates(files)
    annotate = os.environ.get("GITHUB_ACTIONS") == "true"  # shown on the pull request's files
    for path, line in lines:
        click.echo(f"::error file={path}::{line}" if annotate else line, err=True)
    if lines:
        raise click.ClickException(f"{len(lines)} problem{'s' if len(lines) != 1 else ''} in "
                                   f"{len(paths)} path{'s' if len(paths) != 1 else ''}; "
                                   "the site is built from valid submissions only")
    click.echo(f"{len(files)} submission{'s' if len(files) != 1 else ''} valid")


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
def claims(results: tuple[Path, ...]) -> None:
    """Check the field's established results (MEMIT collapses, AlphaEdit outlasts it, RLEdit
    holds where MEND and MALMEN fall, ...) on result stores, each by a rule registered before the
    figures were seen (reports/claims.py, docs/pocket-world.md). Runs of several seeds are judged
    together; a claim whose methods are missing is "not measured"."""
    import shutil

    from .claims import check_claims, claims_table

    width = min(100, shutil.get_terminal_size((100, 24)).columns)
    click.echo(claims_table(check_claims(_collect(results)), width))
