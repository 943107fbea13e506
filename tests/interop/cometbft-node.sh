#!/usr/bin/env bash
# Starts one CometBFT node configured for loopback interop tests, in the background.
#
#   tests/interop/cometbft-node.sh --home DIR --chain-id ID --p2p-port N --rpc-port N \
#       [--persistent-peers id@127.0.0.1:port,...] [--seeds id@127.0.0.1:port,...] [--seed-mode] \
#       [--genesis FILE] [--node-key FILE] [--empty-blocks] [--log-level LEVEL] [--bin PATH] [--no-wait]
#
# Prints the node's PID on stdout (one line, nothing else); the caller kills it by that PID.
# The node's id is `cometbft show-node-id --home DIR`; its log is DIR/cometbft.log.
#
# What it does: `cometbft init` into DIR (which must not hold a node yet), then patches
# config/config.toml for loopback tests and genesis.json's chain_id, then runs
# `cometbft start --proxy_app=kvstore` (the built-in ABCI app, so nothing else is needed), and by
# default waits until the RPC answers /status (30 s at most; on failure prints the log tail and
# exits 1).
#
# Config changes (all else is CometBFT's default):
#   p2p.laddr = tcp://127.0.0.1:<p2p-port>   rpc.laddr = tcp://127.0.0.1:<rpc-port>
#   p2p.addr_book_strict = false              (accept loopback addresses)
#   p2p.allow_duplicate_ip = true             (many peers on 127.0.0.1)
#   p2p.pex = true, p2p.seeds, p2p.persistent_peers, p2p.seed_mode as given
#   p2p.flush_throttle_timeout = 10ms         (default 100ms: messages go out sooner)
#   p2p.handshake_timeout = 5s (--handshake-timeout), p2p.dial_timeout = 2s  (no effect: the
#   transport hard-codes 3 s / 1 s)
#   consensus.create_empty_blocks = false     (quiet node; --empty-blocks turns it back on)
#   consensus.timeout_commit = 500ms          (when blocks are made, make them quickly)
# Not configurable in CometBFT (hard-coded, see tests/interop/README.md): MConnection ping interval
# 60s and pong timeout 45s, PEX ensure-peers period 30s, reconnect interval 5s.
#
# Binary: --bin, else $COMETBFT, else `cometbft` on PATH, else ~/.cache/cometmesh/bin/cometbft.
# Works with v0.34, v0.38, v0.39, v0.40 and v1.0 (same config keys, in the same sections, for
# everything patched here).
set -euo pipefail

usage() { sed -n '2,8p' "$0" >&2; exit 2; }

home="" chain_id="" p2p_port="" rpc_port="" peers="" seeds="" seed_mode=false genesis=""
empty_blocks=false log_level="info" bin="" wait=true node_key="" handshake_timeout="5s"
while [ $# -gt 0 ]; do
    case "$1" in
        --home) home="$2"; shift 2 ;;
        --chain-id) chain_id="$2"; shift 2 ;;
        --p2p-port) p2p_port="$2"; shift 2 ;;
        --rpc-port) rpc_port="$2"; shift 2 ;;
        --persistent-peers) peers="$2"; shift 2 ;;
        --seeds) seeds="$2"; shift 2 ;;
        --seed-mode) seed_mode=true; shift ;;
        --genesis) genesis="$2"; shift 2 ;;
        --node-key) node_key="$2"; shift 2 ;;
        --empty-blocks) empty_blocks=true; shift ;;
        --log-level) log_level="$2"; shift 2 ;;
        --handshake-timeout) handshake_timeout="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --no-wait) wait=false; shift ;;
        -h|--help) usage ;;
        *) echo "cometbft-node: unknown argument $1" >&2; usage ;;
    esac
done
[ -n "$home" ] && [ -n "$chain_id" ] && [ -n "$p2p_port" ] && [ -n "$rpc_port" ] || usage

if [ -z "$bin" ]; then
    if [ -n "${COMETBFT:-}" ]; then bin="$COMETBFT"
    elif command -v cometbft >/dev/null 2>&1; then bin="$(command -v cometbft)"
    else bin="${COMETMESH_CACHE:-$HOME/.cache/cometmesh}/bin/cometbft"
    fi
fi
case "$bin" in */*) ;; *) bin="$(command -v "$bin" || echo "$bin")" ;; esac
[ -x "$bin" ] || { echo "cometbft-node: no cometbft binary at $bin (run tests/interop/install-cometbft.sh)" >&2; exit 1; }

if [ -e "$home/config/config.toml" ]; then
    echo "cometbft-node: $home already holds a node; use a fresh directory" >&2
    exit 1
fi
mkdir -p "$home"
"$bin" init --home "$home" >/dev/null 2>&1

cfg="$home/config/config.toml"

# set <section> <key> <toml value>: replaces `key = ...` inside [section] ("" = the top level).
set_key() {
    local section="$1" key="$2" value="$3" tmp
    tmp="$(mktemp)"
    awk -v sec="$section" -v key="$key" -v val="$value" '
        /^\[.*\][[:space:]]*$/ { cur = substr($0, 2, index($0, "]") - 2) }
        cur == sec && $0 ~ "^" key "[[:space:]]*=" { print key " = " val; found = 1; next }
        { print }
        END { if (!found) exit 3 }
    ' "$cfg" >"$tmp" || { rm -f "$tmp"; echo "cometbft-node: no key $key in [$section]" >&2; exit 1; }
    mv "$tmp" "$cfg"
}

set_key "" proxy_app '"kvstore"'
set_key "" log_level "\"$log_level\""
set_key rpc laddr "\"tcp://127.0.0.1:$rpc_port\""
set_key p2p laddr "\"tcp://127.0.0.1:$p2p_port\""
set_key p2p seeds "\"$seeds\""
set_key p2p persistent_peers "\"$peers\""
set_key p2p addr_book_strict false
set_key p2p allow_duplicate_ip true
set_key p2p pex true
set_key p2p seed_mode "$seed_mode"
set_key p2p flush_throttle_timeout '"10ms"'
set_key p2p handshake_timeout "\"$handshake_timeout\""
set_key p2p dial_timeout '"2s"'
set_key consensus create_empty_blocks "$empty_blocks"
set_key consensus timeout_commit '"500ms"'

# --node-key: a node_key.json to use instead of the one `init` generated (fixed identity).
if [ -n "$node_key" ]; then
    cp "$node_key" "$home/config/node_key.json"
fi

gen="$home/config/genesis.json"
if [ -n "$genesis" ]; then
    cp "$genesis" "$gen"
fi
# genesis.json as written by cometbft: `  "chain_id": "test-chain-XXXX",` on its own line.
sed -i -E "s/^([[:space:]]*\"chain_id\":[[:space:]]*)\"[^\"]*\"/\1\"$chain_id\"/" "$gen"
grep -q "\"chain_id\": \"$chain_id\"" "$gen" || { echo "cometbft-node: could not set chain_id in $gen" >&2; exit 1; }

"$bin" start --home "$home" --proxy_app=kvstore </dev/null >"$home/cometbft.log" 2>&1 &
pid=$!

if $wait; then
    for _ in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "cometbft-node: cometbft exited; last log lines:" >&2
            tail -n 30 "$home/cometbft.log" >&2
            exit 1
        fi
        if curl -sf "http://127.0.0.1:$rpc_port/status" >/dev/null 2>&1; then
            echo "$pid"
            exit 0
        fi
        sleep 0.2
    done
    echo "cometbft-node: RPC on 127.0.0.1:$rpc_port did not answer within 30s; log tail:" >&2
    tail -n 30 "$home/cometbft.log" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
fi
echo "$pid"
