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


@app.command()
def version() -> None:
    """Print the perpex version."""
    from perpex import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
