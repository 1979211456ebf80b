"""``editbench artifacts``: check the shipped offline world, or rebuild it
(``harness/checks/artifacts.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from ..checks.artifacts import build_artifacts, expected_code


@click.command("artifacts")
@click.option(
    "--rebuild",
    is_flag=True,
    help="Train the default run's pocket model and editors and the lifelong scenario's model on "
    "this machine (about half an hour on 2 cores) and write them, with a new manifest, to --into.",
)
@click.option(
    "--into",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where --rebuild writes (default: the installed package's artifacts/ folder).",
)
@click.option(
    "--seeds",
    default="0",
    show_default=True,
    metavar="N[,N...]",
    help="Seeds whose trained editors --rebuild includes (the default run uses seed 0).",
)
def artifacts_command(rebuild: bool, into: Path | None, seeds: str) -> None:
    """Check the shipped pocket models and trained editors (SHA-256, and that this code builds
    them), or rebuild them."""
    from ...core import artifacts

    if rebuild:
        target = into or artifacts.SHIPPED_ROOT
        try:
            chosen = tuple(int(s) for s in seeds.split(",") if s.strip())
        except ValueError:
            raise click.BadParameter(
                f"{seeds!r}: expected integers, e.g. 0 or 0,1,2", param_hint="--seeds"
            ) from None
        click.echo(
            "rebuilding the offline world on this machine; a rebuild on another CPU or thread "
            "count trains another world, and the default table moves with it"
        )
        manifest = build_artifacts(target, chosen or (0,))
        click.echo(f"wrote {len(manifest['entries'])} entries and {artifacts.MANIFEST} to {target}")
        return
    manifest = artifacts.read_manifest()
    built = manifest.get("built_with", {})
    if not manifest.get("entries"):
        click.echo(
            f"no shipped artefacts in {artifacts.SHIPPED_ROOT}; the default run trains its own"
        )
        return
    click.echo(
        f"shipped in {artifacts.SHIPPED_ROOT}, built {built.get('date', '?')} with torch "
        f"{built.get('torch', '?')}, {built.get('cpu_capability', '?')} kernels, "
        f"{built.get('threads', '?')} thread(s)"
    )
    damaged = 0
    for name, entry in artifacts.entries().items():
        try:
            artifacts.verify(entry)
            expected = expected_code(name)
            state = "ok" if expected in (None, entry.code) else (
                f"NOT USED: built by other code (code {entry.code or 'not recorded'}, this "
                f"editbench's is {expected}); `editbench artifacts --rebuild` renews it")
            damaged += state != "ok"
        except artifacts.ArtifactError as exc:
            state, damaged = f"DAMAGED: {exc}", damaged + 1
        size = sum(
            (artifacts.SHIPPED_ROOT / name / f).stat().st_size
            for f in entry.files
            if (artifacts.SHIPPED_ROOT / name / f).is_file()
        )
        click.echo(f"  {name:<36} {size / 2**20:6.2f} MiB  {state}")
    if damaged:
        raise SystemExit(1)
