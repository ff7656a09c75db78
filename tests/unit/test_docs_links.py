"""The documentation's links hold: every relative link and image in README.md and
docs/*.md names a file that exists, every `#anchor` into a Markdown file names one of
its headings (GitHub's anchor rules), every `docs/….md#anchor` cited in code leads to a
heading, and the contract is cited in the repository only (docs/contract.md), never as
a file outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the contract once lived in a file outside the repository; code and docs cite docs/ now
OLD_CONTRACT = "DESIGN" + ".md"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
#: [text](target "title") and ![alt](target), not inside inline code
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: [label]: target
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_HTML_IMG = re.compile(r"<img\s[^>]*src=\"([^\"]+)\"", re.IGNORECASE)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (before duplicate suffixes): lowercase, markup
    and punctuation removed except `-` and `_`, each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in "-_ ")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file; repeated headings get -1, -2, …"""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if match is None:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image of a Markdown file."""
    found: list[tuple[int, str]] = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        prose = _CODE_SPAN.sub("", line)
        for pattern in (_INLINE, _REFERENCE, _HTML_IMG):
            found.extend((number, match.group(1)) for match in pattern.finditer(prose))
    return found


def broken_links(path: Path) -> list[str]:
    problems: list[str] = []
    where = path.relative_to(ROOT)
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{where}:{number}: {target} (no such file)")
            continue
        if ROOT not in linked.parents and linked != ROOT:
            problems.append(f"{where}:{number}: {target} (outside the repository)")
            continue
        if anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            problems.append(f"{where}:{number}: {target} (no heading with anchor #{anchor} "
                            f"in {linked.relative_to(ROOT)})")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_image_of_the_docs_leads_somewhere(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_github_anchors_follow_githubs_rules() -> None:
    assert github_slug("§3 Topics and payloads") == "3-topics-and-payloads"
    assert github_slug("6b. Storage contract (for researchers' SQL tools)") == \
        "6b-storage-contract-for-researchers-sql-tools"
    assert github_slug("`trygg users add`") == "trygg-users-add"
    assert github_slug("Journal first, then `trygg.audit_log`") == "journal-first-then-tryggaudit_log"
    assert github_slug("Who may call what") == "who-may-call-what"


def tracked_text_files() -> list[tuple[str, str]]:
    """(path, text) of every file git tracks that is text."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    found: list[tuple[str, str]] = []
    for name in filter(None, names):
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the work tree, not yet committed
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        found.append((name, data.decode("utf-8", "replace")))
    return found


#: a citation in code or config: docs/contract.md#3-events
_CITATION = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)#([\w-]+)")


def test_every_docs_anchor_cited_in_code_names_a_heading() -> None:
    broken: list[str] = []
    for name, text in tracked_text_files():
        for number, line in enumerate(text.splitlines(), start=1):
            for match in _CITATION.finditer(line):
                target = ROOT / "docs" / match.group(1)
                if not target.is_file():
                    broken.append(f"{name}:{number}: {match.group(0)} (no such file)")
                elif match.group(2) not in anchors(target):
                    broken.append(f"{name}:{number}: {match.group(0)} (no such heading)")
    assert not broken, "citations of docs/ that lead nowhere:\n" + "\n".join(broken)


def test_the_contract_is_cited_in_the_repository_only() -> None:
    citing: list[str] = []
    for name, text in tracked_text_files():
        citing.extend(f"{name}:{number}" for number, line in enumerate(text.splitlines(), start=1)
                      if OLD_CONTRACT in line)
    assert not citing, (f"{OLD_CONTRACT} is not part of the repository; cite docs/contract.md "
                        "(or the docs/ page that holds the rule) instead:\n" + "\n".join(citing))
