"""The plain reason of a notice, in Norwegian and English.

"Nattlige toalettbesøk 4,2 per natt mot vanlig 1,5, siste 14 dager" /
"Night-time toilet visits 4.2 per night against usual 1.5, last 14 days". Clock features
read as times ("Første aktivitet om morgenen kl. 09:10 mot vanlig kl. 07:45, siste 5
dager"); a unit that is a measure (t, km, min) follows both numbers, a rate ("per natt")
only the first.
"""

from __future__ import annotations

from trygg.insights import Feature


def clock(hours: float) -> str:
    minutes = round(hours * 60) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def number(value: float, decimals: int, *, comma: bool) -> str:
    text = f"{value:.{decimals}f}"
    return text.replace(".", ",") if comma else text


def reason(feature: Feature, value: float, usual: float, days: int) -> tuple[str, str]:
    """(Norwegian, English) for `feature` at `value` against `usual` over the last `days`."""
    texts = []
    for comma, label, unit, against, last, day_word, at in (
            (True, feature.label_nb, feature.unit_nb, "mot vanlig", "siste", ("dag", "dager"), "kl. "),
            (False, feature.label_en, feature.unit_en, "against usual", "last", ("day", "days"), "")):
        if feature.clock:
            now, before = f"{at}{clock(value)}", f"{at}{clock(usual)}"
        else:
            now, before = number(value, feature.decimals, comma=comma), number(usual, feature.decimals, comma=comma)
            if unit.startswith("per "):
                now = f"{now} {unit}"
            elif unit:
                now, before = f"{now} {unit}", f"{before} {unit}"
        texts.append(f"{label} {now} {against} {before}, {last} {days} {day_word[days != 1]}")
    return texts[0], texts[1]
