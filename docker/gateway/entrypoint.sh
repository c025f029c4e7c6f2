#!/bin/sh
# The gateway image's entrypoint: a private copy of the mounted host key, then the gateway.
#
# RJQ_GATEWAY_HOST_KEY is the mounted key file (a Secret's key: root's, 0440 under fsGroup,
# which the gateway refuses, as sshd does). It is copied 0600 into RJQ_GATEWAY_RUNTIME_DIR,
# the gateway's own directory, and the gateway reads the copy. A missing key is an error: the
# gateway would make a new one, and clients pinned the old.
set -eu
key=${RJQ_GATEWAY_HOST_KEY:-/etc/remote-jobqueue/gateway/host-key}
runtime=${RJQ_GATEWAY_RUNTIME_DIR:-/run/rjq-gateway}
if [ ! -f "$key" ] || [ ! -r "$key" ]; then
    echo "rjq-gateway: no readable host key at $key: mount the gateway's key there" \
        "(or set RJQ_GATEWAY_HOST_KEY); make one with" \
        "'remote-jobqueue gateway --host-key FILE --print-host-key'" >&2
    exit 2
fi
umask 077
mkdir -p "$runtime"
chmod 0700 "$runtime"
cp "$key" "$runtime/.host-key.new"
chmod 0600 "$runtime/.host-key.new"
mv -f "$runtime/.host-key.new" "$runtime/host-key"
exec remote-jobqueue gateway --host-key "$runtime/host-key" "$@"
