"""The test tiers: the `root` mark by directory, its skip without root, and the CI guard.

Everything under tests/kernel, tests/e2e and tests/chaos is marked `root`; elsewhere a test
says so with `tests.support.privilege.requires_root`. A `root` test is skipped when this
process cannot run it (not root, or `ip`/`nft` missing), before any fixture runs. With the
environment variable CI=true, a skipped `root` test fails the run, naming why it was skipped:
CI must run the whole suite, not pass by skipping its privileged half.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Generator

import pytest

from tests.support import privilege

TESTS = pathlib.Path(__file__).resolve().parent
ROOT_DIRECTORIES = ("kernel", "e2e", "chaos")


def _in_root_directory(item: pytest.Item) -> bool:
    try:
        relative = pathlib.Path(item.path).resolve().relative_to(TESTS)
    except ValueError:
        return False
    return relative.parts[0] in ROOT_DIRECTORIES


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    why = privilege.missing()
    for item in items:
        if _in_root_directory(item):
            item.add_marker(pytest.mark.root)
        if why is not None and item.get_closest_marker("root") is not None:
            item.add_marker(pytest.mark.skip(reason=why))


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and os.environ.get("CI") == "true"
        and item.get_closest_marker("root") is not None
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true and this root-tier test was skipped: {_skip_reason(report)}. "
            "CI runs every root test: run as root after scripts/setup.sh has installed "
            "the tools."
        )
    return report
