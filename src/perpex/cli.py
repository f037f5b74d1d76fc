"""The `perpex` command line: demo, simulate, scenarios, serve, keys, report, sweep, sweeps,
replay, journal, version."""

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
def serve(
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="address to listen on (a non-loopback address exposes the trading API; /admin "
        "answers loopback only)",
    ),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="port to listen on"),
    scenario: str | None = typer.Option(
        None, "--scenario", help="the market: a shipped scenario (perpex scenarios) or a .toml"
    ),
    speed: float = typer.Option(1.0, "--speed", help="scenario seconds per wall-clock second"),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="journal and keys (default ~/.local/share/perpex)"
    ),
    tape: float = typer.Option(
        20.0,
        "--tape",
        help="the market's own small trades a wall-clock minute, on average (0: none; then "
        "nobody trades but you, and there are no candles until you do)",
    ),
) -> None:
    """A local exchange with Binance USDⓈ-M's API, live streams and a web dashboard."""
    from perpex.live.console import serve as run_server

    run_server(host=host, port=port, scenario=scenario, speed=speed, data_dir=data_dir, tape=tape)


keys_app = typer.Typer(no_args_is_help=True, help="API keys of a perpex serve data dir")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="the account (and key) name"),
    deposit: str = typer.Option("10000", "--deposit", help="USDT credited to the new account"),
    ed25519: bool = typer.Option(False, "--ed25519", help="an Ed25519 key instead of HMAC"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object for scripts"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="the server's data dir"),
) -> None:
    """Make an API key (and its account); the secret is shown once."""
    from perpex.server.keys_cli import create

    create(name, deposit=deposit, ed25519=ed25519, as_json=as_json, data_dir=data_dir)


@keys_app.command("list")
def keys_list(
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="the server's data dir"),
) -> None:
    """The keys: name, kind, created, revoked (never a secret)."""
    from perpex.server.keys_cli import list_keys

    list_keys(as_json=as_json, data_dir=data_dir)


@keys_app.command("revoke")
def keys_revoke(
    name: str = typer.Argument(..., help="the key to revoke"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="the server's data dir"),
) -> None:
    """Revoke a key: refused at once, also by a running server."""
    from perpex.server.keys_cli import revoke

    revoke(name, data_dir=data_dir)


@app.command()
def report(
    run_dir: str = typer.Argument(
        ...,
        help="a run directory of perpex simulate, its events/ (or a copy of that anywhere), "
        "or a sweep's directory",
    ),
    out: str | None = typer.Option(
        None, "--out", help="the HTML file (default RUN_DIR/report.html)"
    ),
) -> None:
    """Rebuild the HTML report of a run (from its event log, events/, alone) or of a sweep."""
    from perpex.sim.console import report as build

    build(run_dir, out)


@app.command()
def sweep(
    name_or_path: str = typer.Argument(..., help="a shipped sweep (perpex sweeps) or a .toml"),
    backend: str = typer.Option("local", "--backend", help="local (a process pool) or ray"),
    workers: int | None = typer.Option(
        None, "--workers", help="tasks run at once (default: this machine's CPUs)"
    ),
    address: str | None = typer.Option(
        None, "--address", help="an existing Ray cluster (ray start --head prints it)"
    ),
    out: str | None = typer.Option(
        None, "--out", help="results directory (default perpex-runs/sweeps/NAME)"
    ),
    resume: bool = typer.Option(
        False, "--resume", help="skip the tasks OUT/tasks.jsonl records as done; retry failures"
    ),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="stop at the first failure"),
) -> None:
    """Run every (grid point, seed) of a sweep; write tasks, aggregate and a report."""
    from perpex.sweep.console import sweep as run_sweep_command

    run_sweep_command(
        name_or_path, backend=backend, workers=workers, address=address, out=out,
        resume=resume, fail_fast=fail_fast,
    )  # fmt: skip


@app.command()
def sweeps(
    as_json: bool = typer.Option(False, "--json", help="print name and question as JSON"),
) -> None:
    """List the shipped sweeps and the question each answers."""
    from perpex.sweep.console import sweeps as list_sweeps

    list_sweeps(as_json)


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
