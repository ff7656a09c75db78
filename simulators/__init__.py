"""Device simulators speaking the Trygg MQTT contract (docs/contract.md#3-mqtt-contract).

- a **fleet** of residents with care profiles and a daily rhythm (`Fleet`), deterministic
  for a seed, with the matching registry (`Fleet.registry`, `demo_registry`);
- **load** at a fixed rate for benchmarks (`run_load`);
- scripted **scenarios** with the alerts staff should see (`load_scenario`);
- the `trygg simulate` command (`register`).
"""

from simulators.cli import register
from simulators.clock import SimClock, check_start, default_start
from simulators.connections import ConnectionPool, MqttTarget
from simulators.devices import Network
from simulators.errors import BrokerError, ClockError, ScenarioError, SimulatorError
from simulators.fleet import Fleet, demo_fleet
from simulators.load import play_load, run_load
from simulators.profiles import (
    PROFILES,
    TEAMS,
    Profile,
    SimDevice,
    SimResident,
    build_residents,
    make_resident,
)
from simulators.publisher import play, play_fleet, play_scenario, run_fleet, run_scenario
from simulators.registry_gen import (
    DEMO_REGISTRY_PATH,
    DEMO_RESIDENTS,
    DEMO_SEED,
    demo_registry,
    demo_registry_yaml,
    fleet_registry,
    load_registry,
    registry_yaml,
    write_registry,
)
from simulators.report import RunStats, summary_table
from simulators.scenarios import (
    SCENARIO_DIR,
    Expectation,
    Scenario,
    Step,
    list_scenarios,
    load_scenario,
    parse_scenario,
)
from simulators.wire import SimMessage

__all__ = [
    "DEMO_REGISTRY_PATH",
    "DEMO_RESIDENTS",
    "DEMO_SEED",
    "PROFILES",
    "SCENARIO_DIR",
    "TEAMS",
    "BrokerError",
    "ClockError",
    "ConnectionPool",
    "Expectation",
    "Fleet",
    "MqttTarget",
    "Network",
    "Profile",
    "RunStats",
    "Scenario",
    "ScenarioError",
    "SimClock",
    "SimDevice",
    "SimMessage",
    "SimResident",
    "SimulatorError",
    "Step",
    "build_residents",
    "check_start",
    "default_start",
    "demo_fleet",
    "demo_registry",
    "demo_registry_yaml",
    "fleet_registry",
    "list_scenarios",
    "load_registry",
    "load_scenario",
    "make_resident",
    "parse_scenario",
    "play",
    "play_fleet",
    "play_load",
    "play_scenario",
    "register",
    "registry_yaml",
    "run_fleet",
    "run_load",
    "run_scenario",
    "summary_table",
    "write_registry",
]
