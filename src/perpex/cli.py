"""The `perpex` command line: demo, simulate, scenarios, report, replay, journal, version."""

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


@app.command()
def simulate(
    scenario: str = typer.Argument(..., help="a shipped scenario (perpex scenarios) or a .toml"),
    seed: int = typer.Option(0, "--seed", min=0, help="the run's seed"),
    out: str | None = typer.Option(
        None, "--out", help="run directory (default perpex-runs/NAME-seedN)"
    ),
    sets: list[str] = typer.Option(  # noqa: B008 (typer's way to declare a repeated option)
        [], "--set", help="override a scenario key: --set exchange.insurance_fund=0"
    ),
    strategy: str | None = typer.Option(
        None, "--strategy", help="your strategy class: module:Class or path/to/file.py:Class"
    ),
    data: str | None = typer.Option(None, "--data", help="your own candles (CSV/Parquet/Feather)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
) -> None:
    """Run a scenario through the exchange; print the summary and write events and a report."""
    from perpex.sim.console import simulate as simulate_run

    simulate_run(
        scenario, seed=seed, out=out, sets=sets, strategy=strategy, data=data, as_json=as_json
    )


@app.command()
def scenarios(
    as_json: bool = typer.Option(False, "--json", help="print name and question as JSON"),
) -> None:
    """List the shipped scenarios and the question each answers."""
    from perpex.sim.console import scenarios as list_scenarios

    list_scenarios(as_json)


@app.command()
def report(
    run_dir: str = typer.Argument(..., help="a run directory written by perpex simulate"),
    out: str | None = typer.Option(
        None, "--out", help="the HTML file (default RUN_DIR/report.html)"
    ),
) -> None:
    """Rebuild a run's HTML report from its event files alone."""
    from perpex.sim.console import report as build

    build(run_dir, out)


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
