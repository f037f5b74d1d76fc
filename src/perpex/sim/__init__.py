"""The simulator: market data, price paths, agents and scenarios, driving the one engine."""
