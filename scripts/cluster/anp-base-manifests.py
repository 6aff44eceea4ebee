#!/usr/bin/env python3
"""Derive the network-policy-api conformance suite's base manifests for this test bed.

    anp-base-manifests.py UPSTREAM_MANIFESTS_YAML OUT_YAML

The suite (sigs.k8s.io/network-policy-api/conformance, base/manifests.yaml, embedded
in its test binary) starts every base pod with two SCTP servers (`agnhost porter`)
and runs two host-network `centaur` replicas that ask for the same host ports.  On a
one-node cluster whose kernel has no SCTP module neither can become Ready.  This
writes a copy with:

* every `agnhost porter` container removed (the SCTP servers: nothing else uses them);
* in the host-network `centaur` StatefulSet, the container ports removed (on a host
  network pod they are host ports, which one node cannot give two replicas) and each
  server started only in `centaur-1`, the replica the node-peer cases address;
  `centaur-0` runs `agnhost pause` in their place and only makes up the replica count
  the suite waits for.  Both replicas share the node's address, so the node-peer probes
  reach the same address and ports as on a two-node cluster.

The text is edited line by line (the file is a Go template, not YAML), and every edit
is counted: a different upstream layout stops the script instead of yielding a
half-derived file.
"""

import sys

CONTAINER = "        - name: "  # an item of a pod template's containers list
PORTER = "/agnhost porter"
SERVER_REPLICA = "centaur-1"
POD_NAME_ENV = [
    "          - name: POD_NAME",
    "            valueFrom:",
    "              fieldRef:",
    "                fieldPath: metadata.name",
]


def split_containers(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """The lines before the first container item, and the container items."""
    head: list[str] = []
    items: list[list[str]] = []
    for line in lines:
        if line.startswith(CONTAINER):
            items.append([line])
        elif items:
            items[-1].append(line)
        else:
            head.append(line)
    return head, items


def host_network_server(item: list[str]) -> list[str]:
    """A centaur container without its ports, serving only in SERVER_REPLICA."""
    out: list[str] = []
    in_ports = False
    has_env = any(line == "          env:" for line in item)
    for line in item:
        if line == "          ports:":
            in_ports = True
            continue
        if in_ports:
            if line.startswith("            "):
                continue
            in_ports = False
        if line.startswith('          command: ["/bin/bash", "-c", "'):
            prefix = '          command: ["/bin/bash", "-c", "'
            script = line[len(prefix) : -len('"]')]
            if '"' in script or not line.endswith('"]'):
                raise SystemExit(f"anp-base-manifests: unexpected command line: {line!r}")
            guarded = (
                f'if [ \\"$POD_NAME\\" = {SERVER_REPLICA} ]; then exec {script}; '
                "else exec /agnhost pause; fi"
            )
            out.append(f'{prefix}{guarded}"]')
            if not has_env:
                out.append("          env:")
                out.extend(POD_NAME_ENV)
            continue
        out.append(line)
        if line == "          env:":
            out.extend(POD_NAME_ENV)
    return out


def derive(text: str) -> tuple[str, int, int]:
    """The derived text, the number of SCTP containers removed and of centaur servers guarded."""
    docs = text.split("\n---\n")
    removed = guarded = 0
    for i, doc in enumerate(docs):
        if "kind: StatefulSet" not in doc:
            continue
        head, items = split_containers(doc.split("\n"))
        kept = [item for item in items if not any(PORTER in line for line in item)]
        removed += len(items) - len(kept)
        if "      hostNetwork: true" in head:
            new_items = []
            for item in kept:
                if any(line.startswith("          command:") for line in item):
                    item = host_network_server(item)
                    guarded += 1
                new_items.append(item)
            kept = new_items
        docs[i] = "\n".join(head + [line for item in kept for line in item])
    return "\n---\n".join(docs).rstrip("\n") + "\n", removed, guarded


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        text = f.read()
    out, removed, guarded = derive(text)
    # v0.3.0: five StatefulSets with two SCTP servers each; four centaur servers
    if removed != 10 or guarded != 4 or PORTER in out:
        print(
            f"anp-base-manifests: {argv[1]}: removed {removed} SCTP servers (expected 10), "
            f"guarded {guarded} centaur servers (expected 4): upstream layout changed",
            file=sys.stderr,
        )
        return 1
    with open(argv[2], "w", encoding="utf-8") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
