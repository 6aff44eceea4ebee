#!/usr/bin/env python3
"""Summarize a network-policy-api conformance run (`go test -v` output of its test binary).

    anp-summary.py TEST_LOG [SKIPPED_CASE ...]

Counts the cases (the subtests of TestConformance) that passed, failed and were skipped
(by the suite, for an unsupported feature, or by name: the SKIPPED_CASE arguments, which
`-test.skip` kept from running and which the log therefore never names).  Each failure
of a case is put down to the probe that failed: the suite's probe helper logs
"FAILED Command was [/agnhost connect ... --protocol=P ...]" for every unsuccessful
attempt, and a failure ("Error Trace:") is the last such probe of the failing test.  A
case whose every failure is an SCTP probe failed only because the kernel has no SCTP
(its TCP and UDP probes before that one passed); any other failure is unexpected.

Exit status: 0 when no case failed unexpectedly and at least one case ran, else 1.
"""

import re
import sys

CASE = "TestConformance/"
RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (TestConformance/[^ ]+) \(")
SWITCH = re.compile(r"^=== (?:RUN|CONT|NAME|PAUSE)\s+(\S+)")
PROBE = re.compile(r"FAILED Command was \[(.*)\]")
PROTOCOL = re.compile(r"--protocol=(\w+)")
ERROR_TEST = re.compile(r"^\s*Test:\s+(\S+)")


def case_of(test: str) -> str:
    """TestConformance/<Case>[/subtest...] -> <Case>."""
    return test[len(CASE) :].split("/", 1)[0]


def summarize(lines: list[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each case's result, and each failing case's failing probes (their protocols)."""
    results: dict[str, str] = {}
    last_probe: dict[str, str] = {}
    failures: dict[str, list[str]] = {}
    current = ""
    in_error = False
    for line in lines:
        m = SWITCH.match(line)
        if m:
            current = m.group(1)
            continue
        m = RESULT.match(line)
        if m:
            name = m.group(2)
            if "/" not in name[len(CASE) :]:
                results[case_of(name)] = m.group(1)
            continue
        m = PROBE.search(line)
        if m and current.startswith(CASE):
            p = PROTOCOL.search(m.group(1))
            last_probe[current] = p.group(1) if p else "?"
            continue
        if "Error Trace:" in line:
            in_error = True
            continue
        m = ERROR_TEST.match(line)
        if in_error and m:
            in_error = False
            test = m.group(1)
            if test.startswith(CASE):
                failures.setdefault(case_of(test), []).append(last_probe.get(test, "none"))
    return results, failures


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    by_name = argv[2:]
    results, failures = summarize(lines)
    passed = sorted(c for c, r in results.items() if r == "PASS")
    skipped = sorted(c for c, r in results.items() if r == "SKIP")
    failed = sorted(c for c, r in results.items() if r == "FAIL")
    sctp = [c for c in failed if failures.get(c) and all(p == "sctp" for p in failures[c])]
    other = [c for c in failed if c not in sctp]
    total = len(results) + len(by_name)
    print(
        f"passed: {len(passed)} of {total}, failed on SCTP probes only: {len(sctp)}, "
        f"failed otherwise: {len(other)}, skipped by feature: {len(skipped)}, "
        f"skipped by name: {len(by_name)}"
    )
    for c in sctp:
        print(f"FAIL (SCTP probe, no SCTP in the kernel): {c}")
    for c in other:
        probes = ", ".join(failures.get(c, [])) or "no probe failure logged"
        print(f"FAIL (unexpected; failing probes: {probes}): {c}")
    for c in skipped:
        print(f"SKIP (feature not in --features): {c}")
    for c in by_name:
        print(f"SKIP (by name, SCTP traffic: no SCTP in the kernel): {c}")
    if not results:
        print("no case ran (the suite's setup failed: see the log)")
        return 1
    return 1 if other else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
