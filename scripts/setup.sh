#!/usr/bin/env bash
# Install everything remote-jobqueue needs on a fresh Debian bookworm machine (as root):
# the system packages of the development facility and the project's virtualenv in .venv.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++: ROOT's C++ interpreter needs the C/C++ headers and a compiler driver to find them.
# podman + runc: the images of docker/ are built and run without a Docker engine.
# chromium: the browser test of the Dask panel (driven by playwright-core, no browser download).
SYSTEM_PACKAGES=(debootstrap iproute2 nftables xrootd-server xrootd-server-plugins
                 xrootd-client xrootd-client-plugins curl g++ podman runc chromium)
# node and npm build the JupyterLab extension and run the browser test; a machine that has
# none (from NodeSource or elsewhere) gets Debian's.
command -v npm >/dev/null || SYSTEM_PACKAGES+=(nodejs npm)

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (the facility needs podman, networks, routes and namespaces)" >&2
    exit 1
fi

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# podman's default runtime (crun) fails on these machines' hybrid cgroups, and its default
# ulimits are refused: runc and explicit limits, in a drop-in of our own.
mkdir -p /etc/containers/containers.conf.d
cat > /etc/containers/containers.conf.d/remote-jobqueue.conf <<'CONF'
# Written by remote-jobqueue's scripts/setup.sh.
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.rjq-installed
want=$(cat pyproject.toml facility/pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup.sh: installing the project into .venv" >&2
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/pip install -q -U pip
    .venv/bin/pip install -q -e ".[dev]"
    # [dev] installs the development facility (facility/) as a copy; make it editable too, so
    # its daemons run this checkout's code (pip refuses both forms in one command).
    .venv/bin/pip install -q --no-deps -e ./facility
    echo "$want" > "$stamp"
fi

# The Dask HEP users of coffea's dask-awkward stack run (it pins dask < 2025.4): a second
# environment with only what the cluster and analysis tests need, which scripts/test.sh runs
# them in too. The sites mount whichever environment started the facility.
OLDER_DASK=2025.3.1
older=.venv-dask-2025.3
want_older=$(printf '%s %s' "$want" "$OLDER_DASK" | sha256sum | cut -c1-16)
if [ ! -x "$older/bin/python" ] || [ "$(cat "$older/.rjq-installed" 2>/dev/null)" != "$want_older" ]; then
    echo "setup.sh: installing the project with dask $OLDER_DASK into $older" >&2
    [ -x "$older/bin/python" ] || "$PYTHON" -m venv "$older"
    "$older/bin/pip" install -q -U pip
    "$older/bin/pip" install -q -e ".[cluster-tests]" "dask==$OLDER_DASK" "distributed==$OLDER_DASK"
    "$older/bin/pip" install -q --no-deps -e ./facility
    echo "$want_older" > "$older/.rjq-installed"
fi

# The JupyterLab extension (prebuilt into the package, linked into .venv), and the browser
# test's playwright-core (it drives Debian's chromium).
bash scripts/build-labextension.sh
if [ "$(cat tests/browser/node_modules/.rjq-stamp 2>/dev/null)" != "$(sha256sum < tests/browser/package-lock.json)" ]; then
    echo "setup.sh: installing the browser test's npm packages" >&2
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
    sha256sum < tests/browser/package-lock.json > tests/browser/node_modules/.rjq-stamp
fi
