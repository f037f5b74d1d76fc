"""Risk-parameter sweeps: many seeded runs of the simulator over a grid, locally or on Ray.

`perpex.sweep.spec` reads a sweep file (a base scenario, the parameters to vary, the seeds,
the metrics) and lists its grid points and tasks; `perpex.sweep.runner` runs the tasks on a
backend (`perpex.sweep.backends`) and writes the result files (`perpex.sweep.results`);
`perpex.sweep.console` is ``perpex sweep`` and ``perpex sweeps``. The shipped sweeps are the
TOML files in ``perpex/sweep/sweeps/``.

```python
from perpex.sweep import grid, load_sweep, tasks

spec = load_sweep("insurance-fund-sizing-small")
len(grid(spec)), len(tasks(spec))  # (10, 30)
```
"""

from perpex.sweep.spec import (
    GridPoint,
    Parameter,
    SweepError,
    SweepSpec,
    Task,
    grid,
    load_sweep,
    scenario_for,
    shipped_sweeps,
    tasks,
)

__all__ = [
    "GridPoint",
    "Parameter",
    "SweepError",
    "SweepSpec",
    "Task",
    "grid",
    "load_sweep",
    "scenario_for",
    "shipped_sweeps",
    "tasks",
]
