#!/usr/bin/env bash
# Runs the same p2p workloads through CometBFT's own Go implementation (bench/go, built against
# github.com/cometbft/cometbft/p2p/conn at the version pinned in bench/go/go.mod) and through
# cometmesh, in the same sitting, and prints one table:
#
#   workload cometmesh_value cometbft_value ratio
#
# ratio = cometmesh / cometbft (throughputs: higher is better for cometmesh; *_rss_kib: lower is).
# Each workload runs in its own process, RUNS times (default 3); the median is reported.
#
#   bench/compare.sh                 # all workloads
#   RUNS=5 bench/compare.sh
#   bench/compare.sh secret_bulk     # some workloads
#
# Workloads (loopback TCP, one connection unless said otherwise):
#   secret_bulk    256 MiB one way through one SecretConnection             -> secret_bulk_mib_per_s
#   mconn_64b      200000 64-byte messages, one MConnection channel         -> mconn_64b_{msgs,mib}_per_s
#   mconn_64kib    2048 65536-byte messages, one MConnection channel        -> mconn_64kib_{msgs,mib}_per_s
#   idle_peer_rss  RSS growth of the accepting process per idle peer (1000) -> idle_peer_rss_kib
# Needs Go (tests/interop/install-cometbft.sh installs it from Debian if missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench-compare"
mkdir -p "$OUT"
CACHE="${COMETMESH_CACHE:-$HOME/.cache/cometmesh}"
export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE/go/build}"

ALL_WORKLOADS=(secret_bulk mconn_64b mconn_64kib idle_peer_rss)
if [ $# -gt 0 ]; then WORKLOADS=("$@"); else WORKLOADS=("${ALL_WORKLOADS[@]}"); fi

# The figures each workload reports (the `key value` lines compared).
keys_of() {
    case "$1" in
        secret_bulk) echo secret_bulk_mib_per_s ;;
        mconn_64b) echo mconn_64b_msgs_per_s mconn_64b_mib_per_s ;;
        mconn_64kib) echo mconn_64kib_msgs_per_s mconn_64kib_mib_per_s ;;
        idle_peer_rss) echo idle_peer_rss_kib ;;
        *) echo "compare.sh: unknown workload $1" >&2; exit 2 ;;
    esac
}

# --- CometBFT side -----------------------------------------------------------------------------
echo "building bench/go (CometBFT p2p/conn)..." >&2
(cd "$ROOT/bench/go" && go build -o "$OUT/cometbft-bench" .)

cometbft_run() {
    "$OUT/cometbft-bench" -only "$1"
}

# --- cometmesh side ----------------------------------------------------------------------------
# >>> COMETMESH SIDE (adapters) <<<
# The program is tests/examples/adapter_bench.rs: whole nodes (handle -> engine task -> MConnection
# -> SecretConnection -> TCP -> reader task -> engine -> event stream), rate limits lifted, send
# queue of 100 messages, as bench/go. COMETMESH_RUNTIME=tokio (default) or async-std picks the
# runtime. secret_bulk is not measured at node level (n/a).
# COMETMESH_BENCH=<program> overrides both: it is run as `<program> --only <workload>`.
CM_BENCH="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/adapter_bench"
cometmesh_build() {
    [ -n "${COMETMESH_BENCH:-}" ] && return 0
    echo "building tests/examples/adapter_bench (release)..." >&2
    (cd "$ROOT" && cargo build --release -q -p cometmesh-tests --example adapter_bench)
}
cometmesh_run() {
    if [ -n "${COMETMESH_BENCH:-}" ]; then
        "$COMETMESH_BENCH" --only "$1"
        return
    fi
    case "$1" in
        mconn_64b | mconn_64kib | idle_peer_rss) ;;
        *) return 1 ;;
    esac
    "$CM_BENCH" --runtime "${COMETMESH_RUNTIME:-tokio}" --only "$1"
}
# >>> end of the cometmesh side <<<

# median_of <key> <file>: the median of that key's values over the runs recorded in <file>.
median_of() {
    local vals
    vals="$(awk -v k="$1" '$1 == k { print $2 }' "$2" | sort -g)"
    [ -n "$vals" ] || { echo "n/a"; return; }
    echo "$vals" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

cometmesh_build
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for w in "${WORKLOADS[@]}"; do
    keys_of "$w" >/dev/null
    for _ in $(seq 1 "$RUNS"); do
        echo "running $w..." >&2
        cometbft_run "$w" >>"$tmp/cometbft.$w"
        cometmesh_run "$w" >>"$tmp/cometmesh.$w" 2>/dev/null || true
    done
done

echo "# bench/compare.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), median of $RUNS runs"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# cometbft: $(awk '/github.com\/cometbft\/cometbft v/ { for (i = 1; i <= NF; i++) if ($i ~ /^v[0-9]/) print $i }' "$ROOT/bench/go/go.mod"), $(go version | awk '{print $3}')"
echo "# ratio = cometmesh / cometbft"
printf '%-26s %16s %16s %8s\n' workload cometmesh_value cometbft_value ratio
for w in "${WORKLOADS[@]}"; do
    for k in $(keys_of "$w"); do
        cb="$(median_of "$k" "$tmp/cometbft.$w")"
        cm="n/a"
        [ -f "$tmp/cometmesh.$w" ] && cm="$(median_of "$k" "$tmp/cometmesh.$w")"
        ratio="n/a"
        if [ "$cm" != n/a ] && [ "$cb" != n/a ]; then
            ratio="$(awk -v a="$cm" -v b="$cb" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }')"
        fi
        printf '%-26s %16s %16s %8s\n' "$k" "$cm" "$cb" "$ratio"
    done
done
