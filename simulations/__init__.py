"""The network simulator: the real ``scheduler`` machines and the real pure ``ledger`` driven
by a seeded discrete-event loop over a virtual network, with churn and adversaries.

``run(scenario, seed, out)`` runs a scenario (a :class:`Scenario` or a TOML path) and
returns its :class:`Summary`; with ``out`` it writes the output directory
(specs/simulator.md). ``aimx sim run`` is the command line for it.
"""

from pathlib import Path as _Path

from ._errors import ScenarioError as ScenarioError
from ._errors import SimulationError as SimulationError
from ._run import Summary as Summary
from ._run import gini as gini
from ._run import percentile as percentile
from ._run import run as run
from ._scenario import Scenario as Scenario
from ._scenario import load_scenario as load_scenario
from ._scenario import parse_scenario as parse_scenario
from ._sim import Simulation as Simulation

#: The shipped scenarios (smoke, churn, cheaters-20pct, coordinator-outage, scale-100k).
SCENARIOS_DIR = _Path(__file__).parent / "scenarios"
