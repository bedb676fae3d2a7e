#!/bin/bash
# Build Prometheus' promtool (Apache-2.0) from the Go module proxy only, to
# check the shipped alert rules. usage: build-promtool.sh WORKDIR -> WORKDIR/bin/promtool
set -euo pipefail
W=${1:?workdir}; mkdir -p "$W"; W=$(cd "$W" && pwd)
export GOMODCACHE=$W/gomod GOCACHE=$W/gocache GOPATH=$W/gopath GOFLAGS=-buildvcs=false GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off
PROMETHEUS=v0.316.0   # Prometheus 3.16's Go module version
dl() { go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'; }
S=$W/src; rm -rf "$S"
cp -r "$(dl github.com/prometheus/prometheus@$PROMETHEUS)" "$S"; chmod -R u+w "$S"
mkdir -p "$W/bin"
cd "$S" && go build -trimpath -ldflags "-s -w" -o "$W/bin/promtool" ./cmd/promtool
"$W/bin/promtool" --version
