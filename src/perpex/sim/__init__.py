"""The simulator: market data, price paths, agents and scenarios, driving the one engine.

```python
from perpex.sim import Scenario, run

result = run(Scenario.load("covid-2020-03-12"), seed=0, out="runs/covid")
result.summary, result.report_path, result.events_path
```
"""

from perpex.sim.runner import SimResult, run
from perpex.sim.scenario import ScenarioError, shipped_scenarios
from perpex.sim.scenario_model import Scenario

__all__ = ["Scenario", "ScenarioError", "SimResult", "run", "shipped_scenarios"]
