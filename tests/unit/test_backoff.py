"""The one retry delay policy: jittered, doubling, capped, reset by a success."""

import pytest

from trygg.backoff import Backoff


def test_delays_double_up_to_the_cap_and_a_success_starts_again() -> None:
    backoff = Backoff(0.5, 4.0, uniform=lambda low, high: high)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_each_wait_is_a_random_share_of_the_delay() -> None:
    shares = iter([0.5, 0.75, 1.0])
    backoff = Backoff(1.0, 10.0, uniform=lambda low, high: low + (high - low) * (next(shares) - 0.5) * 2)
    assert [backoff.next() for _ in range(3)] == [0.5, 1.5, 4.0]


def test_the_default_jitter_stays_between_half_and_all_of_the_delay() -> None:
    backoff = Backoff(1.0, 1.0)
    waits = [backoff.next() for _ in range(200)]
    assert all(0.5 <= w <= 1.0 for w in waits)
    assert max(waits) - min(waits) > 0.1


@pytest.mark.parametrize(("first", "most"), [(0, 1), (2, 1), (-1, 5)])
def test_a_policy_that_cannot_work_is_refused(first: float, most: float) -> None:
    with pytest.raises(ValueError, match="first_s"):
        Backoff(first, most)
