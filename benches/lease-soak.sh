#!/usr/bin/env bash
# The long lease soak (LEASES.md §6d; issue 7, verification 4), outside CI:
#
#     benches/lease-soak.sh [--rounds N] [--seed S] [--backend etcd|peers]
#
# Runs tests/lease_soak.rs's soak_<backend>_rounds in a release build with
# feature test-hooks (through ./test.sh, which finds or fetches etcd), N
# rounds (default 1000, about 2.5 s each at ttl 2 s), and keeps the whole
# output in target/lease-soak/<backend>-<time>.log; the figures (the
# `soak:` lines) are printed again at the end. Exit status: the test's.
#
# The suite runs the same tests with 8 (etcd) and 20 (peers) rounds;
# SOAK_SEED replays one run's choices of fault and victim (not its timing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds=1000
backend=etcd
seed=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
        --seed) seed="${2:?--seed needs a number}"; shift 2 ;;
        --backend) backend="${2:?--backend needs etcd or peers}"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "lease-soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$backend" in etcd|peers) ;; *) echo "lease-soak.sh: --backend etcd|peers" >&2; exit 2 ;; esac
case "$rounds" in ''|*[!0-9]*) echo "lease-soak.sh: --rounds takes a number" >&2; exit 2 ;; esac

mkdir -p target/lease-soak
log="target/lease-soak/${backend}-$(date -u +%Y%m%dT%H%M%SZ).log"
export SOAK_ROUNDS="$rounds"
if [ -n "$seed" ]; then
    export SOAK_SEED="$seed"
fi

echo "lease-soak: $rounds rounds, backend $backend; log: $log"
status=0
./test.sh --release --test lease_soak "soak_${backend}_rounds" -- \
    --exact --nocapture 2>&1 | tee "$log" || status=$?

echo
echo "lease-soak: figures ($log):"
grep -E '^soak:' "$log" || echo "lease-soak: no figures: the soak did not finish (see the log)"
exit "$status"
