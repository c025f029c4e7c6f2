#!/usr/bin/env bash
# Build the JupyterLab extension (labextension/, TypeScript) into its prebuilt form in
# src/remote_jobqueue/lab/labextension/ (gitignored; the wheel ships it as shared data), and,
# for the editable install in the virtualenv, link it and the server extension's config where
# Jupyter looks for them. The build is skipped while the sources and the lockfile are those of
# the last build (labextension/.build-stamp); the links are made every time.
#
# Usage: scripts/build-labextension.sh [VENV]   (default: $VENV, else .venv of this checkout)
# Needs node and npm (the npm registry, once per lockfile) and the virtualenv's jupyterlab.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${1:-${VENV:-$root/.venv}}
ext=labextension
out=src/remote_jobqueue/lab/labextension
stamp=$ext/.build-stamp
name=remote-jobqueue-lab
server_config=jupyter-config/jupyter_server_config.d/remote_jobqueue.json

# One hash of every input of the build; tests/unit/test_labextension.py computes the same.
sources_hash() {
    (cd "$ext" && find src style package.json package-lock.json tsconfig.json -type f -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "build-labextension: $tool is missing" >&2; exit 1; }
done
[ -x "$venv/bin/jupyter" ] || { echo "build-labextension: no jupyter in $venv/bin" >&2; exit 1; }

want=$(sources_hash)
if [ ! -f "$out/package.json" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "build-labextension: building $ext into $out" >&2
    rm -f "$stamp"
    (cd "$ext" && npm ci --no-audit --no-fund --loglevel=error && npx --no-install tsc)
    # JupyterLab >= 4.6 delegates `jupyter labextension build` to jupyter-builder (on PATH).
    if [ -x "$venv/bin/jupyter-builder" ]; then
        PATH="$venv/bin:$PATH" "$venv/bin/jupyter-builder" build "$ext"
    else
        PATH="$venv/bin:$PATH" "$venv/bin/jupyter" labextension build "$ext"
    fi
    echo "$want" > "$stamp"
fi

# The editable install: Jupyter finds prebuilt extensions in <prefix>/share/jupyter/labextensions
# and server config in <prefix>/etc/jupyter; links keep them this checkout's. A copy an earlier
# (non-editable) install left there is replaced.
link() {
    local target=$1 link=$2
    mkdir -p "$(dirname "$link")"
    if [ -e "$link" ] && [ ! -L "$link" ]; then
        rm -rf "$link"
    fi
    ln -sfn "$target" "$link"
}
link "$root/$out" "$venv/share/jupyter/labextensions/$name"
link "$root/$server_config" "$venv/etc/jupyter/jupyter_server_config.d/$(basename "$server_config")"
echo "build-labextension: $name linked into $venv" >&2
