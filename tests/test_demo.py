"""`make demo` runs `perpex demo`: the scripted session must run and tell its story."""

from __future__ import annotations

import io

from rich.console import Console

from perpex.demo import run_demo


def test_the_demo_runs_and_liquidates_alice_through_the_book() -> None:
    out = io.StringIO()
    ex = run_demo(Console(file=out, width=140))
    text = out.getvalue()
    assert "08:00 UTC funding at 0.0100%" in text
    assert "alice liquidated" in text and "liquidation fill" in text
    assert ex.position("alice", "BTCUSDT").size == 0
    assert ex.insurance_fund() > 1000  # the clearance fee and the surplus went in
    ex.check_invariants()
