#!/usr/bin/env python3
"""Sort the failed specs of an e2e JUnit report by kind of failure.

"connectivity" failures are the NetworkPolicy probes whose observed reachability
differed from the expected truth table (what every spec reports while no policy
enforcer is installed); anything else (pods not starting, timeouts, API errors)
is listed separately because it points at the test bed, not at the enforcer.
"""

import re
import sys
import xml.etree.ElementTree as ET

CONNECTIVITY = re.compile(
    r"wrong results|reachability|probe.*(BLOCKED|ALLOWED)|Expected (allowed|blocked)", re.I
)


def main(path: str) -> int:
    root = ET.parse(path).getroot()
    passed, conn, other, skipped = [], [], [], 0
    for tc in root.iter("testcase"):
        name = tc.get("name", "")
        if tc.find("skipped") is not None or tc.get("status") == "skipped":
            skipped += 1
            continue
        # suite-level nodes ([SynchronizedBeforeSuite], [ReportAfterSuite] ...) are
        # not specs: listed only when they fail
        if not name.startswith("[It]") and tc.find("failure") is None and tc.find("error") is None:
            continue
        fail = tc.find("failure")
        if fail is None:
            fail = tc.find("error")
        if fail is None:
            passed.append(name)
            continue
        text = (fail.get("message") or "") + "\n" + (fail.text or "")
        (conn if CONNECTIVITY.search(text) else other).append(
            (name, (fail.get("message") or "").strip().splitlines()[:1])
        )
    print(
        f"specs: {len(passed)} passed, {len(conn) + len(other)} failed "
        f"({len(conn)} connectivity-differs, {len(other)} other), {skipped} skipped"
    )
    for name, msg in other:
        print(f"  OTHER FAILURE: {name}: {msg[0] if msg else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
