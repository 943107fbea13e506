#!/usr/bin/env bash
# Runs the same p2p workloads through CometBFT's own Go implementation (bench/go, built against
# github.com/cometbft/cometbft/p2p/conn) and through cometmesh, in the same sitting, and prints
# one table:
#
#   workload cometmesh_value cometbft_value ratio
#
# ratio = cometmesh / cometbft (throughputs: higher is better for cometmesh; *_rss_kib and
# *_cpu_us_per_msg, the CPU time of the whole process per message, both ends: lower is).
# Each workload runs in its own process, RUNS times (default 3); the median is reported.
#
#   bench/compare.sh                 # all workloads
#   RUNS=5 bench/compare.sh
#   LARGE_MSGS=2048 SMALL_MSGS=200000 BULK_MIB=256 bench/compare.sh   # the sizes used until 2026-12-06
#   bench/compare.sh secret_bulk     # some workloads
#   COMETBFT_VERSION=v0.38.26 bench/compare.sh   # against another CometBFT release
#
# CometBFT version: COMETBFT_VERSION, default v0.40.0 (bench/go/go.mod). v0.38.26 is pinned in
# bench/go/go-v0.38.26.mod (+ .sum), used through `go build -modfile`; any other version gets a
# module file made under target/bench-compare/ by `go mod edit` + `go mod tidy` (needs the Go
# module proxy). The committed go.mod is never edited.
#
# Workloads (loopback TCP, one connection unless said otherwise):
#   secret_bulk    BULK_MIB (default 1024) MiB one way through one SecretConnection
#                                                                           -> secret_bulk_mib_per_s
#   mconn_64b      SMALL_MSGS (default 1000000) 64-byte messages, one MConnection channel
#                                                                           -> mconn_64b_{msgs,mib}_per_s, _cpu_us_per_msg
#   mconn_64kib    LARGE_MSGS (default 16384) 65536-byte messages, one MConnection channel
#                                                                           -> mconn_64kib_{msgs,mib}_per_s, _cpu_us_per_msg
#                  (cometmesh: the reactor API, try_send + Inbox; the extra rows
#                  mconn_*_send_wait_* are the older send_wait path, compared with the same
#                  CometBFT figure)
#   handshakes     2000 SecretConnection handshakes in a row, both ends in one process, each
#                  with its TCP connect and accept                           -> handshakes_per_s
#   idle_peer_rss  RSS growth of the accepting process per idle peer (PEERS, default 1000)
#                  -> idle_peer_rss_kib, idle_connect_seconds, idle_arrival_handshakes_per_s,
#                     idle_cpu_percent (CPU of the accepting process while its peers idle)
# The sizes make each run last about a second or more: with the earlier ones (2048 x 64 KiB,
# 200000 x 64 B, 256 MiB) a run took 70-250 ms, so start-up (connection set-up, TCP windows,
# first allocations) weighed on the figures and a ratio moved by +-15 % between sittings.
# Needs Go (tests/interop/install-cometbft.sh installs it from Debian if missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench-compare"
mkdir -p "$OUT"
CACHE="${COMETMESH_CACHE:-$HOME/.cache/cometmesh}"
export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE/go/build}"

ALL_WORKLOADS=(secret_bulk mconn_64b mconn_64kib handshakes idle_peer_rss)
COMETBFT_VERSION="${COMETBFT_VERSION:-v0.40.0}"
PEERS="${PEERS:-1000}"
SMALL_MSGS="${SMALL_MSGS:-1000000}"
LARGE_MSGS="${LARGE_MSGS:-16384}"
BULK_MIB="${BULK_MIB:-1024}"
# Many peers need many file descriptors (two per peer in the dialling process): raise the soft
# limit for this benchmark only, as far as the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ $# -gt 0 ]; then WORKLOADS=("$@"); else WORKLOADS=("${ALL_WORKLOADS[@]}"); fi

# The figures each workload reports (the `key value` lines compared).
keys_of() {
    case "$1" in
        secret_bulk) echo secret_bulk_mib_per_s ;;
        mconn_64b) echo mconn_64b_msgs_per_s mconn_64b_mib_per_s mconn_64b_cpu_us_per_msg mconn_64b_send_wait_msgs_per_s ;;
        mconn_64kib) echo mconn_64kib_msgs_per_s mconn_64kib_mib_per_s mconn_64kib_cpu_us_per_msg mconn_64kib_send_wait_mib_per_s ;;
        handshakes) echo handshakes_per_s ;;
        idle_peer_rss) echo idle_peer_rss_kib idle_connect_seconds idle_arrival_handshakes_per_s idle_cpu_percent ;;
        *) echo "compare.sh: unknown workload $1" >&2; exit 2 ;;
    esac
}

# --- CometBFT side -----------------------------------------------------------------------------
# The module file for COMETBFT_VERSION: the committed go.mod (v0.40.0), a committed
# go-<version>.mod, or one made under $OUT from go.mod.
cometbft_modfile() {
    local pinned
    pinned="$(awk '/^require github.com\/cometbft\/cometbft v/ { print $3 }' "$ROOT/bench/go/go.mod")"
    if [ "$COMETBFT_VERSION" = "$pinned" ]; then
        echo "$ROOT/bench/go/go.mod"
    elif [ -f "$ROOT/bench/go/go-$COMETBFT_VERSION.mod" ]; then
        echo "$ROOT/bench/go/go-$COMETBFT_VERSION.mod"
    else
        local mod="$OUT/go-$COMETBFT_VERSION.mod"
        cp "$ROOT/bench/go/go.mod" "$mod"
        cp "$ROOT/bench/go/go.sum" "${mod%.mod}.sum"
        (cd "$ROOT/bench/go" &&
            go mod edit -modfile="$mod" -require="github.com/cometbft/cometbft@$COMETBFT_VERSION" &&
            go mod tidy -modfile="$mod") >&2
        echo "$mod"
    fi
}
CB_BENCH="$OUT/cometbft-bench-$COMETBFT_VERSION"
echo "building bench/go against CometBFT $COMETBFT_VERSION (p2p/conn)..." >&2
CB_MODFILE="$(cometbft_modfile)"
(cd "$ROOT/bench/go" && go build -modfile="$CB_MODFILE" -o "$CB_BENCH" .)

cometbft_run() {
    "$CB_BENCH" -only "$1" -peers "$PEERS" -small-msgs "$SMALL_MSGS" -large-msgs "$LARGE_MSGS" \
        -bulk-mib "$BULK_MIB"
}

# --- cometmesh side ----------------------------------------------------------------------------
# >>> COMETMESH SIDE (adapters) <<<
# The program is tests/examples/adapter_bench.rs: whole nodes (handle -> engine task -> MConnection
# -> SecretConnection -> TCP -> reader task -> engine -> reactor Inbox), rate limits lifted, send
# queue of 100 messages, as bench/go. The sender uses the reactor API (try_send, waiting for
# SendReady when the queue is full); the send_wait_* workloads (one reply round trip per message,
# lossy event stream) run beside them for the *_send_wait_* rows. COMETMESH_RUNTIME=tokio (default) or async-std picks the
# runtime. secret_bulk is tests/examples/secret_bulk.rs instead: one SecretConnection
# (cometmesh_core::secret Handshake/Sealer/Opener) over blocking std::net TCP, a writer thread
# sealing 64 KiB writes and a reader thread opening, as bench/go's secret_bulk.
# COMETMESH_BENCH=<program> overrides both: it is run as `<program> --only <workload>`.
CM_BENCH="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/adapter_bench"
CM_SECRET="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/secret_bulk"
cometmesh_build() {
    [ -n "${COMETMESH_BENCH:-}" ] && return 0
    echo "building tests/examples/{adapter_bench,secret_bulk} (release)..." >&2
    (cd "$ROOT" && cargo build --release -q -p cometmesh-tests --example adapter_bench --example secret_bulk)
}
cometmesh_run() {
    if [ -n "${COMETMESH_BENCH:-}" ]; then
        "$COMETMESH_BENCH" --only "$1"
        return
    fi
    case "$1" in
        secret_bulk | handshakes) "$CM_SECRET" --only "$1" --bulk-mib "$BULK_MIB" ;;
        mconn_64b | mconn_64kib)
            "$CM_BENCH" --runtime "${COMETMESH_RUNTIME:-tokio}" --only "$1,send_wait_${1#mconn_}" \
                --small-msgs "$SMALL_MSGS" --large-msgs "$LARGE_MSGS" ;;
        idle_peer_rss)
            "$CM_BENCH" --runtime "${COMETMESH_RUNTIME:-tokio}" --only "$1" --peers "$PEERS" ;;
        *) return 1 ;;
    esac
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
START="$(date -u '+%Y-%m-%d %H:%M:%S UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for w in "${WORKLOADS[@]}"; do
    keys_of "$w" >/dev/null
    for _ in $(seq 1 "$RUNS"); do
        echo "running $w..." >&2
        cometbft_run "$w" >>"$tmp/cometbft.$w"
        cometmesh_run "$w" >>"$tmp/cometmesh.$w" 2>>"$OUT/cometmesh-$w.stderr" || echo "compare.sh: cometmesh $w failed, see $OUT/cometmesh-$w.stderr" >&2
    done
done

echo "# bench/compare.sh, median of $RUNS interleaved runs"
echo "# start: $START; end: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# cometbft: $(awk '/^require github.com\/cometbft\/cometbft v/ { print $3 }' "$CB_MODFILE"), $(go version | awk '{print $3}')"
echo "# cometmesh runtime: ${COMETMESH_RUNTIME:-tokio}; peers (idle_peer_rss): $PEERS"
echo "# sizes: $SMALL_MSGS x 64 B, $LARGE_MSGS x 64 KiB, $BULK_MIB MiB bulk"
echo "# ratio = cometmesh / cometbft"
printf '%-26s %16s %16s %8s\n' workload cometmesh_value cometbft_value ratio
for w in "${WORKLOADS[@]}"; do
    for k in $(keys_of "$w"); do
        # An extra row of ours (*_send_wait_*) compares with CometBFT's figure of the workload.
        cb="$(median_of "${k/_send_wait/}" "$tmp/cometbft.$w")"
        cm="n/a"
        [ -f "$tmp/cometmesh.$w" ] && cm="$(median_of "$k" "$tmp/cometmesh.$w")"
        ratio="n/a"
        if [ "$cm" != n/a ] && [ "$cb" != n/a ]; then
            ratio="$(awk -v a="$cm" -v b="$cb" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }')"
        fi
        printf '%-26s %16s %16s %8s\n' "$k" "$cm" "$cb" "$ratio"
    done
done
