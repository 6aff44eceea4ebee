#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs `podseg demo`: a sandbox node of network
# namespaces, the embedded API emulator and the agent, enforcing sample policies.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/podseg demo "$@"
