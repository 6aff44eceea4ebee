"""README.md and docs/ describe what podseg is and does, not how it got there, and the tests
say what they prove, not when or why they were written.

Development history (issue numbers, commit ids, "this round", "used to", "follow-up") belongs
in CHANGELOG.md. The README is the front door: short, and it opens by saying what podseg is.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_LINES = 260

HISTORY_MARKERS = {
    "issue number": re.compile(r"\bissues?[- ]#?\d+", re.IGNORECASE),
    "#N reference": re.compile(r"(?:^|[\s(\[])#\d+(?![\w-])"),
    "this round/session": re.compile(
        r"\bthis (?:round|session|change|PR|pull request)\b", re.IGNORECASE
    ),
    "commit id": re.compile(r"\bcommits? [0-9a-f]{7,40}\b", re.IGNORECASE),
    "used to": re.compile(
        r"(?<!\bis )(?<!\bare )(?<!\bbe )(?<!\bbeing )\bused to\b", re.IGNORECASE
    ),
    "previously": re.compile(r"\bpreviously\b", re.IGNORECASE),
    "a fix narrative": re.compile(r"\b(?:before|after) (?:a|the|this) fix\b", re.IGNORECASE),
    "design card": re.compile(r"\bdesign card\b", re.IGNORECASE),
    "follow-up": re.compile(r"\bfollow-?ups?\b", re.IGNORECASE),
}


def documents() -> list[pathlib.Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def suite_sources() -> list[pathlib.Path]:
    """Every Python file of the test suite but this one (its examples are history on purpose)."""
    return sorted(p for p in (ROOT / "tests").rglob("*.py") if p != pathlib.Path(__file__))


def history_in(text: str) -> list[str]:
    """`line N: marker: the line` for every history marker in `text`."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in HISTORY_MARKERS.items():
            if pattern.search(line):
                found.append(f"line {number}: {what}: {line.strip()}")
    return found


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_development_history(path: pathlib.Path) -> None:
    found = history_in(path.read_text())
    assert not found, f"{path.relative_to(ROOT)} carries history (move it to CHANGELOG.md):\n" + (
        "\n".join(found)
    )


@pytest.mark.parametrize("path", suite_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_tests_name_what_they_prove_not_their_history(path: pathlib.Path) -> None:
    found = history_in(path.read_text())
    assert not found, f"{path.relative_to(ROOT)} carries history; say what the test proves:\n" + (
        "\n".join(found)
    )


@pytest.mark.parametrize(
    "text",
    [
        "Measured for issue 8.",
        "The goal of the follow-up.",
        "See #12 for details.",
        "At the start of this round the p50 was 93 ms.",
        "Before (commit f3e181a) and after.",
        "The agent used to rewrite every table.",
        "previously the guard stayed off",
    ],
)
def test_the_markers_catch_history(text: str) -> None:
    assert history_in(text)


@pytest.mark.parametrize(
    "text",
    [
        "[trust model](security.md#7-containment-trust-model)",
        "The token is used to authenticate senders.",
        "A connection the new ruleset no longer allows is cut.",
        "pod web-7d9f8c6b5-x2x4q, fingerprint 2d895eeff8dfc7dc",
    ],
)
def test_the_markers_spare_ordinary_prose(text: str) -> None:
    assert not history_in(text)


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines, at most {MAX_README_LINES}"


def test_readme_opens_with_what_podseg_is() -> None:
    """The first paragraph, before any code block, says what podseg is."""
    paragraph: list[str] = []
    for line in README.read_text().splitlines():
        assert not line.startswith("```"), "README.md shows code before saying what podseg is"
        if line.startswith("#") and not paragraph:
            continue
        if not line.strip():
            if paragraph:
                break
            continue
        paragraph.append(line)
    text = " ".join(paragraph)
    assert re.search(r"NetworkPolicy|segmentation", text), f"first paragraph: {text!r}"
