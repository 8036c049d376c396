#!/bin/sh
# Serve's HAProxy, telling the ingress who the client is. Ray 2.60 generates HAProxy's configuration with no
# `option forwardfor` and no hook to add one, so the ingress would see HAProxy as every client. Ray runs the
# binary named by RAY_SERVE_HAPROXY_BINARY_PATH with `-f <config>` at every start and reload; this script is
# that binary (deployments.launch.haproxy_env): it adds `option forwardfor` (HAProxy appends the peer it saw
# to X-Forwarded-For) to the configuration's defaults section, then runs the real HAProxy, ENSDEF_HAPROXY_BINARY.
set -eu
prev=
for arg in "$@"; do
  if [ "$prev" = "-f" ] && [ -f "$arg" ] && ! grep -q '^    option forwardfor$' "$arg"; then
    sed -i 's/^defaults$/defaults\n    option forwardfor/' "$arg"
  fi
  prev=$arg
done
exec "${ENSDEF_HAPROXY_BINARY:?ENSDEF_HAPROXY_BINARY names the real haproxy}" "$@"
