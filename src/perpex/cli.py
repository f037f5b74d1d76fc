"""The `perpex` command line: demo (and, as they land, simulate, serve, replay, bench)."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="perpex: a perpetual-futures exchange"
)


@app.command()
def demo() -> None:
    """A scripted session: two 20x traders, a market maker, index moves, positions."""
    from perpex.demo import run_demo

    run_demo()


journal_app = typer.Typer(add_completion=False, help="Inspect journals.")
app.add_typer(journal_app, name="journal")


@app.command()
def replay(path: str = typer.Argument(..., help="a journal database (exchange.db)")) -> None:
    """Replay a journal into a fresh engine; print the final state hash and event digest."""
    from perpex.journal.tools import replay as replay_journal

    result = replay_journal(path)
    typer.echo(f"commands      {result.commands}")
    typer.echo(f"state_hash    {result.state_hash}")
    typer.echo(f"event_digest  {result.event_digest}")


@journal_app.command("inspect")
def journal_inspect(
    path: str = typer.Argument(..., help="a journal database (exchange.db)"),
    by_type: bool = typer.Option(False, "--by-type", help="decode every row and count types"),
) -> None:
    """Counts, sequence range, snapshots and size of a journal."""
    from perpex.journal.tools import inspect as inspect_journal

    for key, value in inspect_journal(path, by_type=by_type).items():
        typer.echo(f"{key:<20} {value}")


@app.command()
def version() -> None:
    """Print the perpex version."""
    from perpex.version import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
