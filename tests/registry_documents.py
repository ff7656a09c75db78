"""Hostile registry documents for the tests of the registry's limits
(trygg/registry_limits.py): each is small to send and costly to load without them."""

from __future__ import annotations


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """"Billion laughs": a few hundred bytes that stand for 10⁹ values."""
    lines = ["teams: [{id: east, name: Øst}]", "x0: &a0 [lol]"]
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join([*lines, f"residents: *a{levels}"])


def many_aliases(count: int = 400_000) -> str:
    """A resident written once and repeated by alias: each one is validated again."""
    return ("teams: [{id: east, name: Øst}]\n"
            "residents:\n- &r {id: r-1, name: Kari, team: east, devices: [{id: d-1, kind: alarm_unit}]}\n"
            + "- *r\n" * count)


def too_deep(levels: int = 100_000, json: bool = False) -> str:
    nested = "[" * levels + "]" * levels
    return '{"teams": ' + nested + "}" if json else "teams: " + nested


__all__ = ["alias_bomb", "many_aliases", "too_deep"]
