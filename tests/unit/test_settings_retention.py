"""Retention settings (docs/storage.md "Retention"): the agreed defaults, and a value under
a class's minimum stops Trygg with one line naming the variable."""

from __future__ import annotations

import pytest

from trygg.errors import SettingsError
from trygg.settings import load_settings


def test_the_defaults_keep_what_a_municipality_must_keep() -> None:
    s = load_settings(_env_file=None)
    assert (s.retain_events_days, s.retain_heartbeats_days, s.retain_device_hourly_days,
            s.retain_device_daily_days, s.retain_dead_letters_days) == (1827, 14, 90, 1827, 90)
    assert s.maintenance_interval_s == 60


@pytest.mark.parametrize(("variable", "too_low"), [
    ("TRYGG_RETAIN_EVENTS_DAYS", "30"),
    ("TRYGG_RETAIN_HEARTBEATS_DAYS", "1"),
    ("TRYGG_RETAIN_DEVICE_HOURLY_DAYS", "1"),
    ("TRYGG_RETAIN_DEVICE_DAILY_DAYS", "30"),
    ("TRYGG_RETAIN_DEAD_LETTERS_DAYS", "6"),
    ("TRYGG_MAINTENANCE_INTERVAL_S", "0"),
])
def test_a_value_under_the_minimum_is_refused_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, variable: str, too_low: str) -> None:
    monkeypatch.setenv(variable, too_low)
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert caught.value.setting == variable
    assert "greater than or equal" in caught.value.message or "greater than" in caught.value.message
    assert "\n" not in str(caught.value)


def test_a_value_that_is_not_a_number_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRYGG_RETAIN_HEARTBEATS_DAYS", "two weeks")
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert caught.value.setting == "TRYGG_RETAIN_HEARTBEATS_DAYS"
