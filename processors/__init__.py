"""Streaming rules of docs/contract.md#4-rules-and-alerts: one small state machine per resident, one timer heap.

`Processor` is the pure, synchronous facade (events and timers in, `AlertIntent`s out);
`ProcessorStage` runs it on asyncio between the gateway and the alerts stage. The rule
families live in `rules_*` modules; `localtime`, `geofence` and `scheduler` are their
building blocks.
"""

from processors.context import ResidentContext, Timer, TimerKey
from processors.errors import ProcessorError, StageNotRunningError, StateError
from processors.geofence import Placement, ZoneSet
from processors.localtime import add_daytime, daytime_between, in_window
from processors.processor import RESTART_GRACE, STATE_VERSION, Processor, export_states
from processors.resident import ResidentState
from processors.scheduler import Scheduler
from processors.stage import ProcessorStage

__all__ = [
    "RESTART_GRACE",
    "STATE_VERSION",
    "Placement",
    "Processor",
    "ProcessorError",
    "ProcessorStage",
    "ResidentContext",
    "ResidentState",
    "Scheduler",
    "StageNotRunningError",
    "StateError",
    "Timer",
    "TimerKey",
    "ZoneSet",
    "add_daytime",
    "daytime_between",
    "export_states",
    "in_window",
]
