#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs the whole test suite: lint, types, then every
# test tier with pytest (tests/). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check agent testbed tests scripts
echo "== ruff format"; .venv/bin/ruff format --check agent testbed tests scripts
echo "== mypy --strict agent testbed"; .venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest -q -ra "$@" tests
