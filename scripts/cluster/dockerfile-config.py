#!/usr/bin/env python3
"""Print the image configuration a Dockerfile's last stage declares, as oci-image.py flags.

    dockerfile-config.py Dockerfile [--build-arg K=V ...]

One flag per line: `--entrypoint JSON`, `--cmd JSON`, `--env K=V` (in order; later ones
win), `--label K=V`. scripts/cluster/podseg-image.sh builds the test cluster's podseg image
with the same install script as the Dockerfile and takes these from the Dockerfile, so the two
images cannot drift. Only what podseg's Dockerfile uses is understood (ARG with defaults, ENV
and LABEL as K=V pairs, ENTRYPOINT and CMD in JSON form); anything else that would change the
image's configuration (USER, WORKDIR, shell-form ENTRYPOINT, ...) is an error, not ignored.
"""

from __future__ import annotations

import json
import re
import shlex
import sys

# COPY: only `--from=cni` (the podseg-cni binary), which podseg-image.sh builds itself.
UNDERSTOOD = {"FROM", "ARG", "LABEL", "RUN", "ENV", "ENTRYPOINT", "CMD", "COPY"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, value) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, value = line.partition(" ")
        out.append((word.upper(), value.strip()))
    return out


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), value)


def pairs(value: str, args: dict[str, str]) -> list[tuple[str, str]]:
    result = []
    for word in shlex.split(value):
        if "=" not in word:
            raise ValueError(f"only K=V pairs are understood: {value!r}")
        key, _, val = word.partition("=")
        result.append((key, expand(val, args)))
    return result


def config(text: str, overrides: dict[str, str]) -> list[str]:
    args: dict[str, str] = {}
    flags: list[str] = []
    for word, value in instructions(text):
        if word not in UNDERSTOOD:
            raise ValueError(f"{word} is not understood by {sys.argv[0]}")
        if word == "FROM":
            flags = []  # a new stage: only the last one's configuration counts
        elif word == "ARG":
            key, eq, default = value.partition("=")
            args[key] = overrides.get(key, default.strip('"') if eq else "")
        elif word == "ENV":
            flags += [f"--env={k}={v}" for k, v in pairs(value, args)]
        elif word == "LABEL":
            flags += [f"--label={k}={v}" for k, v in pairs(value, args)]
        elif word in ("ENTRYPOINT", "CMD"):
            parsed = json.loads(value)
            if not isinstance(parsed, list):
                raise ValueError(f"{word} must be in JSON form")
            flags.append(f"--{word.lower()}={json.dumps(parsed)}")
    return flags


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    overrides = {}
    rest = argv[1:]
    while rest:
        if rest[0] != "--build-arg" or len(rest) < 2:
            print(f"unexpected argument {rest[0]!r}", file=sys.stderr)
            return 2
        key, _, val = rest[1].partition("=")
        overrides[key] = val
        rest = rest[2:]
    with open(argv[0]) as f:
        text = f.read()
    try:
        flags = config(text, overrides)
    except ValueError as e:
        print(f"{argv[0]}: {e}", file=sys.stderr)
        return 1
    print("\n".join(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
