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
# The whole suite (no arguments) also runs the cluster and analysis tests on the older Dask
# that coffea's dask-awkward stack pins (see setup.sh); not the RDataFrame example, whose ROOT
# wheel that environment does not carry.
# With RJQ_KEEP_FACILITY (development) it is skipped: it would restart the kept facility on
# the other environment.
if [ $# -eq 0 ] && [ -z "${RJQ_KEEP_FACILITY:-}" ]; then
    .venv-dask-2025.3/bin/python -m pytest -p no:cacheprovider -k "not rdataframe" \
        tests/integration/test_cluster_local.py tests/integration/test_cluster_remote.py \
        tests/integration/test_analysis.py || status=$?
fi
# Belt and braces: the session fixture takes the facility down; make sure nothing is left.
if [ -z "${RJQ_KEEP_FACILITY:-}" ]; then
    .venv/bin/remote-jobqueue facility down >/dev/null 2>&1 || true
    .venv/bin/remote-jobqueue facility status --require-down || status=1
fi
exit $status
