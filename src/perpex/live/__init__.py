"""`perpex serve`'s live market: a scenario driving a served exchange (issue 13 §1).

`perpex.live.driver.ScenarioDriver` is the `perpex.server.driver.MarketDriver` built from a
scenario (its path on the wall clock at a speed, the simulator's makers quoting around it,
shocks injected by the admin); `StaticDriver` a fixed market for tests and benchmarks;
`perpex.live.console.serve` is the body of `perpex serve`.
This package sits above both `perpex.sim` and `perpex.server`, which do not know each other.
"""

from perpex.live.driver import DEFAULT_SCENARIO, ScenarioDriver, exchange_options
from perpex.live.static import StaticDriver

__all__ = ["DEFAULT_SCENARIO", "ScenarioDriver", "StaticDriver", "exchange_options"]
