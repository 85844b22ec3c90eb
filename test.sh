#!/usr/bin/env bash
# The project's single test command (see README):
#
#     ./test.sh [extra cargo test args...]
#
# It provisions what the test suite needs when it is missing, then runs
# `cargo test --all-features`.
#
# Optional tools (never a reason to fail the run; a missing one only prints a
# warning and the tests that need it skip loudly):
#   promtool  lints the /metrics exposition. Resolution order:
#               1. $PROMTOOL, if it names an executable;
#               2. `promtool` on PATH;
#               3. a copy cached under $BREAKWATER_TOOLS_DIR (default
#                  ~/.cache/breakwater/tools);
#               4. extracted into that cache from Debian's `prometheus` package
#                  (`apt-get download` + `dpkg-deb -x`: only the promtool binary
#                  is kept; no Prometheus server is installed or started).
#             Exported as PROMTOOL=/abs/path/to/promtool for the tests.
#   Set BREAKWATER_NO_TOOL_INSTALL=1 to skip step 4.
#
# Required tools (the tests that need one fail, never skip, without it):
#   etcd      the etcd lease backend's tests start their own etcd on
#             127.0.0.1 (tests/lease_etcd_gateway.rs). Resolution order:
#               1. $ETCD_BIN, if it names an executable;
#               2. `etcd` on PATH, then /usr/bin/etcd;
#               3. a copy cached under $BREAKWATER_TOOLS_DIR;
#               4. extracted into that cache from Debian's `etcd-server`
#                  package (as for promtool: only the etcd binary is kept, so
#                  no etcd service is installed, enabled or started).
#             Exported as ETCD_BIN=/abs/path/to/etcd for the tests.
#   BREAKWATER_NO_TOOL_INSTALL=1 skips step 4 here too.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

warn() {
    printf '\n*** test.sh WARNING: %s\n\n' "$*" >&2
}

tools_dir="${BREAKWATER_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/breakwater/tools}"

# Runs a command as root: directly when we are root, through non-interactive
# sudo when that is available, otherwise fails.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        sudo -n "$@"
    else
        return 1
    fi
}

promtool_works() {
    [ -n "${1:-}" ] && [ -x "$1" ] && "$1" --version >/dev/null 2>&1
}

# Extracts one binary of a Debian package into the cache:
#   fetch_deb_binary PACKAGE PATH_IN_PACKAGE NAME  ->  $tools_dir/bin/NAME
fetch_deb_binary() {
    local package="$1" member="$2" name="$3"
    command -v apt-get >/dev/null 2>&1 || return 1
    command -v dpkg-deb >/dev/null 2>&1 || return 1
    local work log
    work="$(mktemp -d)"
    log="$work/fetch.log"
    # `apt-get download` needs no root, but does need current package lists:
    # on a fresh machine (or with stale lists) refresh them once and retry.
    if ! (cd "$work" && apt-get download -qq "$package") >>"$log" 2>&1; then
        as_root apt-get update -qq >>"$log" 2>&1 || true
        if ! (cd "$work" && apt-get download -qq "$package") >>"$log" 2>&1; then
            sed 's/^/    /' "$log" >&2 || true
            rm -rf "$work"
            return 1
        fi
    fi
    local deb
    deb="$(find "$work" -maxdepth 1 -name "${package}_*.deb" -print -quit)"
    if [ -z "$deb" ] || ! dpkg-deb -x "$deb" "$work/root" >>"$log" 2>&1 \
        || [ ! -x "$work/root/$member" ]; then
        sed 's/^/    /' "$log" >&2 || true
        rm -rf "$work"
        return 1
    fi
    mkdir -p "$tools_dir/bin"
    # Install atomically so a concurrent or interrupted run never sees half a file.
    cp "$work/root/$member" "$tools_dir/bin/.$name.$$"
    chmod 0755 "$tools_dir/bin/.$name.$$"
    mv -f "$tools_dir/bin/.$name.$$" "$tools_dir/bin/$name"
    rm -rf "$work"
}

# Extracts /usr/bin/promtool from Debian's prometheus package into the cache.
fetch_promtool() {
    fetch_deb_binary prometheus usr/bin/promtool promtool
}

resolve_promtool() {
    local candidate
    if [ -n "${PROMTOOL:-}" ]; then
        if promtool_works "$PROMTOOL"; then
            return 0
        fi
        warn "PROMTOOL=$PROMTOOL is not a working promtool; looking elsewhere"
    fi
    candidate="$(command -v promtool 2>/dev/null || true)"
    if promtool_works "$candidate"; then
        PROMTOOL="$candidate"
        return 0
    fi
    candidate="$tools_dir/bin/promtool"
    if promtool_works "$candidate"; then
        PROMTOOL="$candidate"
        return 0
    fi
    if [ "${BREAKWATER_NO_TOOL_INSTALL:-0}" != "1" ]; then
        echo "test.sh: promtool not found; extracting it from Debian's prometheus package into $tools_dir" >&2
        if fetch_promtool && promtool_works "$candidate"; then
            PROMTOOL="$candidate"
            return 0
        fi
    fi
    return 1
}

if resolve_promtool; then
    export PROMTOOL
    echo "test.sh: using PROMTOOL=$PROMTOOL ($("$PROMTOOL" --version 2>&1 | head -n 1))"
else
    unset PROMTOOL
    warn "promtool is unavailable (could not find or install it); the /metrics \
exposition will NOT be linted. Install Debian's 'prometheus' package or set \
PROMTOOL=/path/to/promtool to enable it."
fi

etcd_works() {
    [ -n "${1:-}" ] && [ -x "$1" ] && "$1" --version >/dev/null 2>&1
}

resolve_etcd() {
    local candidate
    if [ -n "${ETCD_BIN:-}" ]; then
        if etcd_works "$ETCD_BIN"; then
            return 0
        fi
        warn "ETCD_BIN=$ETCD_BIN is not a working etcd; looking elsewhere"
    fi
    for candidate in "$(command -v etcd 2>/dev/null || true)" /usr/bin/etcd "$tools_dir/bin/etcd"; do
        if etcd_works "$candidate"; then
            ETCD_BIN="$candidate"
            return 0
        fi
    done
    candidate="$tools_dir/bin/etcd"
    if [ "${BREAKWATER_NO_TOOL_INSTALL:-0}" != "1" ]; then
        echo "test.sh: etcd not found; extracting it from Debian's etcd-server package into $tools_dir" >&2
        if fetch_deb_binary etcd-server usr/bin/etcd etcd && etcd_works "$candidate"; then
            ETCD_BIN="$candidate"
            return 0
        fi
    fi
    return 1
}

if resolve_etcd; then
    export ETCD_BIN
    echo "test.sh: using ETCD_BIN=$ETCD_BIN ($("$ETCD_BIN" --version 2>&1 | head -n 1))"
else
    unset ETCD_BIN
    warn "etcd is unavailable (could not find or install it); the etcd lease \
backend's tests WILL FAIL. Install Debian's 'etcd-server' package or set \
ETCD_BIN=/path/to/etcd."
fi

exec cargo test --all-features "$@"
