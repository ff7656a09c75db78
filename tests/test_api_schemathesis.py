"""Property-based tests of the whole API from its own OpenAPI document (schemathesis):
for an admin and for a staff member, valid and invalid requests never get a 5xx, and
every answer matches the documented schema.

Left out: the SSE stream (an endless response; tests/test_api_alerts.py covers it) and
`POST /logout`, which would sign the test's own token out (tests/test_api_auth.py).
"""

from __future__ import annotations

import time
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.fix_api import World

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Examples per operation, per generation mode and per caller (about 600 requests in all).
EXAMPLES = 10
SKIPPED = {"/api/alerts/stream", "/logout"}
CHECKS = [not_a_server_error, response_schema_conformance]


def operations(world: World) -> list[Any]:
    base = str(world.client.base_url).rstrip("/")
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path not in SKIPPED:
            found.append(operation)
    assert len(found) >= 15
    return found


def exercise(world: World, user: str, mode: GenerationMode) -> None:
    base = str(world.client.base_url).rstrip("/")
    headers = world.headers(user)
    failures: list[str] = []
    for operation in operations(world):
        world.alerts.reset()

        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            case.call_and_validate(base_url=base, headers=headers, checks=CHECKS, timeout=30)

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to get wrong in a request without inputs
        except Exception as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.serial
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("user", ["admin", "staff-east"])
def test_no_server_errors_and_answers_match_the_schema(shared_world: World, user: str,
                                                         mode: GenerationMode) -> None:
    started = time.monotonic()
    exercise(shared_world, user, mode)
    assert time.monotonic() - started < 60
