#!/usr/bin/env bash
# Installs the CometBFT binaries the interop tests and benchmarks run against.
#
#   tests/interop/install-cometbft.sh        # prints the bin dir on its last line
#
# - Go comes from Debian's packages (golang-go) if `go` is not on PATH.
# - One binary per live CometBFT release line, built with `go install` from the Go module registry
#   into $COMETMESH_CACHE/bin (default ~/.cache/cometmesh/bin):
#     cometbft        newest v0.38.x     cometbft-v0.39  newest v0.39.x
#     cometbft-v0.34  newest v0.34.x     cometbft-v0.40  newest v0.40.x
#                                        cometbft-v1.0   newest v1.0.x
# - A binary is rebuilt only when missing or when `<binary> version` differs from the pin.
# Environment: COMETMESH_CACHE (cache root), COMETMESH_SKIP_V034=1 (skip the v0.34 build).
# Exits non-zero when any binary fails to build, except v0.34 (its build is a source patch; it is
# reported as a WARNING, and the tests that need it fail under CI=true when it is missing).
set -euo pipefail

# Pinned: newest tags of each release line on proxy.golang.org as of 2026-12-04
# (`go list -m -versions github.com/cometbft/cometbft`).
COMETBFT_V038="v0.38.26"
COMETBFT_V034="v0.34.35"
COMETBFT_V039="v0.39.4"
COMETBFT_V040="v0.40.0"
COMETBFT_V100="v1.0.1"

CACHE="${COMETMESH_CACHE:-$HOME/.cache/cometmesh}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

log() { echo "install-cometbft: $*" >&2; }

if ! command -v go >/dev/null 2>&1; then
    log "go not found; installing golang-go from Debian"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-go >/dev/null
fi
log "using $(go version)"

# Go's build and module caches also live under the cache root unless the user set them, so a
# second run on the same machine downloads and compiles nothing.
export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE/go/build}"
export GOFLAGS="${GOFLAGS:-} -trimpath"

# build_v034 <version> <outdir>: `go install pkg@version` refuses v0.34.x because its go.mod has
# replace directives, and three of their targets (informalsystems forks of go-kit/kit, spf13/afero,
# adlio/schema, which only trim transitive dependencies) are not served by proxy.golang.org (403).
# So build from a copy of the module source with those three replaces dropped: the upstream
# versions they stand for are used instead. CometBFT's own code (p2p included) is unchanged.
build_v034() {
    local version="$1" out="$2" src work
    src="$(go mod download -json "github.com/cometbft/cometbft@$version" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [ -n "$src" ] || return 1
    work="$(mktemp -d)"
    cp -r "$src/." "$work/"
    chmod -R u+w "$work"
    (
        cd "$work"
        go mod edit \
            -dropreplace github.com/adlio/schema@v1.3.6 \
            -dropreplace github.com/go-kit/kit@v0.13.0 \
            -dropreplace github.com/spf13/afero@v1.11.0
        GOFLAGS="$GOFLAGS -mod=mod" go build -o "$out/cometbft" ./cmd/cometbft
    )
    local rc=$?
    rm -rf "$work"
    return $rc
}

# install_one <version> <name> [<reported>]: builds cmd/cometbft@<version> into $BIN/<name> unless
# it is there. <reported> is what `<name> version` prints (default: <version> without the `v`).
# The tag built is also written to $BIN/.<name>.tag, which decides when the reported version does
# not name the tag (v0.40.0 reports 0.39.0).
install_one() {
    local version="$1" name="$2" want="${3:-${1#v}}" have tmp stamp
    stamp="$BIN/.$name.tag"
    if [ -x "$BIN/$name" ]; then
        have="$("$BIN/$name" version 2>/dev/null | head -n1 || true)"
        if [ "$have" = "$want" ] && { [ "$(cat "$stamp" 2>/dev/null)" = "$version" ] \
            || [ "$want" = "${version#v}" ]; }; then
            echo "$version" >"$stamp"
            log "$name $version already installed ($BIN/$name, reports $have)"
            return 0
        fi
        log "$name is '$have' (tag '$(cat "$stamp" 2>/dev/null)'), want $version: rebuilding"
    fi
    tmp="$(mktemp -d)"
    log "building github.com/cometbft/cometbft/cmd/cometbft@$version"
    local start=$SECONDS
    case "$version" in
        v0.34.*) build_v034 "$version" "$tmp" || { rm -rf "$tmp"; return 1; } ;;
        *) GOBIN="$tmp" go install "github.com/cometbft/cometbft/cmd/cometbft@$version" \
            || { rm -rf "$tmp"; return 1; } ;;
    esac
    rm -f "$stamp"
    mv "$tmp/cometbft" "$BIN/$name"
    rm -rf "$tmp"
    have="$("$BIN/$name" version | head -n1)"
    if [ "$have" != "$want" ]; then
        log "$name reports version '$have', expected $want"
        return 1
    fi
    echo "$version" >"$stamp"
    log "$name $version built in $((SECONDS - start))s (reports $have)"
}

install_one "$COMETBFT_V038" cometbft
install_one "$COMETBFT_V039" cometbft-v0.39
# v0.40.0's version/version.go still says "0.39.0" (upstream did not bump TMCoreSemVer): that is
# what `cometbft version` and its NodeInfo report.
install_one "$COMETBFT_V040" cometbft-v0.40 0.39.0
install_one "$COMETBFT_V100" cometbft-v1.0

if [ "${COMETMESH_SKIP_V034:-0}" != 1 ]; then
    if ! install_one "$COMETBFT_V034" cometbft-v0.34; then
        # v0.34 is a patched source build, so the script goes on without it; its tests then fail
        # (they never pass without their node), so CI reports the missing line.
        log "WARNING: cometbft $COMETBFT_V034 did not build with $(go version); its interop tests will fail"
    fi
fi

echo "$BIN"
