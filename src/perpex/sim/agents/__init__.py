"""Simulated market participants: makers, traders, takers, a whale, the user's strategy."""
