#!/usr/bin/env bash
# Builds tokend's .deb and .rpm.
# usage: packaging/build.sh --version V --out DIR
# Static PIE binaries (CGO_ENABLED=0, -trimpath, no build id), version
# stamped so `tokend version` prints V; nfpm is pinned in packaging/tools/go.mod
# (its own module: programs that import tokend do not inherit its ~75 modules).
# Reproducible: file times come from SOURCE_DATE_EPOCH, else the last commit.
set -euo pipefail
cd "$(dirname "$0")/.."
version= out=
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 --version V --out DIR" >&2; exit 2 ;;
  esac
done
[ -n "$version" ] && [ -n "$out" ] || { echo "usage: $0 --version V --out DIR" >&2; exit 2; }
case "$version" in [0-9]*) ;; *) echo "version must start with a digit: $version" >&2; exit 2 ;; esac

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export VERSION=$version ARCH=$(go env GOARCH)
export STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

# The commit for `tokend --version`: -buildvcs=false keeps the binaries
# reproducible from a source tarball, so it is stamped by hand.
commit=$(git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
CGO_ENABLED=0 go build -trimpath -buildmode=pie -buildvcs=false \
  -ldflags "-s -w -buildid= -X github.com/tokend/tokend/internal/buildinfo.Version=$version -X github.com/tokend/tokend/internal/buildinfo.Commit=$commit" \
  -o "$STAGE/" ./cmd/tokend ./cmd/tokenctl

for m in tokend.8 tokenctl.1 tokend.toml.5; do
  sed "s/^\.TH \([A-Z.]*\) \([0-9]\) \"\"/.TH \1 \2 \"$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)\"/" "packaging/man/$m" |
    gzip -9n > "$STAGE/$m.gz"
done
cat > "$STAGE/changelog" <<CHANGES
tokend ($version-1) unstable; urgency=medium

  * Release $version. See /usr/share/doc/tokend/README.md.

 -- tokend maintainers <maintainers@tokend.dev>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
CHANGES
gzip -9n < "$STAGE/changelog" > "$STAGE/changelog.gz"
touch -d "@$SOURCE_DATE_EPOCH" "$STAGE"/*

# nfpm expands the environment in few fields: fill the template ourselves.
sed -e "s|\${STAGE}|$STAGE|g" -e "s|\${VERSION}|$version|g" -e "s|\${ARCH}|$ARCH|g" packaging/nfpm.yaml > "$STAGE/nfpm.yaml"

mkdir -p "$out"
rm -f "$out"/tokend_*.deb "$out"/tokend-*.rpm
for p in deb rpm; do
  go tool -modfile=packaging/tools/go.mod nfpm package --config "$STAGE/nfpm.yaml" --packager "$p" --target "$out/"
done
ls "$out"
