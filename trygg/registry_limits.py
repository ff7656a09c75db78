"""Bounds on a registry document, checked before it is parsed (STYLE.md "bound input
before parsing it"; docs/operators.md "Limits").

A YAML document can cost far more than its size: 1.9 MiB with 400,000 aliases took
28.8 s and 1.38 GB to load, a few kilobytes of nested aliases ("billion laughs") stand
for 10⁹ values once pydantic walks them, and deep nesting overflows the composer's
recursion. `check_yaml` walks libyaml's event stream — C, flat, no Python objects built
for the document — and stops at the first limit passed:

- `max_bytes`: the document's size (a registry of 100,000 residents with 5 devices each
  is about 45 MiB as YAML, 50 MiB as JSON);
- `max_depth`: nesting of mappings and sequences (a registry needs 8: a polygon point);
- `max_aliases`: `*alias` uses (the project's registries use none; a hand-written one a
  few, e.g. one night window shared by many residents);
- `max_alias_values`: the values the aliases stand for, nested aliases expanded (what
  validation would walk);
- `max_values`: scalars, mappings and sequences in the document itself.

`LimitExceeded` names the limit; the registry turns it into a `RegistryLimitError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import yaml

MIB: Final = 1024 * 1024

_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPEN: Final = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE: Final = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    max_bytes: int = 64 * MIB
    max_depth: int = 32
    max_aliases: int = 1_000
    max_alias_values: int = 100_000
    max_values: int = 10_000_000


class LimitExceeded(ValueError):
    """A document beyond one of `DocumentLimits`: `limit` is the field's name, `status`
    the HTTP status that fits (413 for size, 422 for structure)."""

    def __init__(self, limit: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.status = status

    def __reduce__(self) -> tuple[type[LimitExceeded], tuple[str, str, int]]:
        return type(self), (self.limit, self.message, self.status)


def check_size(size: int, limits: DocumentLimits) -> None:
    if size > limits.max_bytes:
        raise LimitExceeded("max_bytes", f"larger than the limit of {_mib(limits.max_bytes)} "
                            "(TRYGG_REGISTRY_MAX_MB)", 413)


def check_yaml(text: str | bytes, limits: DocumentLimits) -> None:
    """Raise `LimitExceeded` at the first limit the document passes; yaml.YAMLError if
    it is not YAML. Costs about a tenth of loading it, and no memory to speak of."""
    check_size(len(text), limits)
    max_depth, max_aliases = limits.max_depth, limits.max_aliases
    max_alias_values, max_values = limits.max_alias_values, limits.max_values
    #: per open collection: its anchor, and the values in it so far (aliases expanded)
    anchors: list[str | None] = []
    counts: list[int] = []
    open_anchors: set[str] = set()
    weights: dict[str, int] = {}  # anchor → the values it stands for
    values = aliases = alias_values = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.ScalarEvent):
            values += 1
            if event.anchor is not None:
                weights[event.anchor] = 1
            if counts:
                counts[-1] += 1
        elif isinstance(event, _OPEN):
            values += 1
            if len(counts) >= max_depth:
                raise LimitExceeded("max_depth", f"mappings and lists nested deeper than the limit of "
                                    f"{max_depth} levels (line {_line(event)})")
            anchor = event.anchor
            if anchor is not None:
                open_anchors.add(anchor)
            anchors.append(anchor)
            counts.append(1)
        elif isinstance(event, _CLOSE):
            anchor, weight = anchors.pop(), counts.pop()
            if anchor is not None:
                open_anchors.discard(anchor)
                weights[anchor] = weight
            if counts:
                counts[-1] += weight
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > max_aliases:
                raise LimitExceeded("max_aliases", f"more YAML aliases than the limit of {max_aliases:,} "
                                    f"(*{event.anchor}, line {_line(event)}): write the values out, "
                                    "or send JSON")
            if event.anchor in open_anchors:
                raise LimitExceeded("max_aliases", f"the alias *{event.anchor} (line {_line(event)}) is "
                                    "inside its own anchor: a registry cannot contain itself")
            weight = weights.get(event.anchor or "", 1)
            alias_values += weight
            if alias_values > max_alias_values:
                raise LimitExceeded("max_alias_values", f"the YAML aliases stand for more values than the "
                                    f"limit of {max_alias_values:,} (*{event.anchor}, line {_line(event)})")
            if counts:
                counts[-1] += weight
        else:
            continue
        if values > max_values:
            raise LimitExceeded("max_values", f"more values than the limit of {max_values:,}", 413)


def load_yaml(text: str | bytes) -> object:
    """`yaml.safe_load` with libyaml where it is installed (several times faster)."""
    return yaml.load(text, Loader=_LOADER)  # a safe loader (CSafeLoader or SafeLoader)


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 0


def _mib(size: int) -> str:
    return f"{size / MIB:g} MiB"


__all__ = ["MIB", "DocumentLimits", "LimitExceeded", "check_size", "check_yaml", "load_yaml"]
