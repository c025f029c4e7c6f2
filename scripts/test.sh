#!/usr/bin/env bash
# Set everything up and run the whole test suite (lint, unit, and integration tests against
# the real development facility, which the tests bring up and take down themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
status=0
.venv/bin/python -m pytest "$@" || status=$?
# Belt and braces: the session fixture takes the facility down; make sure nothing is left.
if [ -z "${RJQ_KEEP_FACILITY:-}" ]; then
    .venv/bin/remote-jobqueue facility down >/dev/null 2>&1 || true
    .venv/bin/remote-jobqueue facility status --require-down || status=1
fi
exit $status
