#!/usr/bin/env bash
# Set everything up and run the main job end to end on the development facility.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/remote-jobqueue facility up
.venv/bin/python examples/hello_sites.py
# The analysis: a Dask cluster at site T2_A (behind NAT), two workers reading through T2_A's cache.
eval "$(.venv/bin/remote-jobqueue facility env --user alice)"
.venv/bin/python examples/dimuon_uproot.py --site T2_A --workers 2 \
    --png "${TMPDIR:-/tmp}/dimuon_uproot.png"
