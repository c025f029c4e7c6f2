#!/usr/bin/env bash
# Set everything up and run the main job end to end on the development facility.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/remote-jobqueue facility up
.venv/bin/python examples/hello_sites.py
