#!/usr/bin/env bash
# TLS load bench: Breakwater beside HAProxy, both terminating TLS with the same
# ECDSA P-256 certificate, each alone on CPU 0, in front of one nginx origin
# (CPU 1, shared with wrk). Two figures, in interleaved rounds, medians:
#   keep-alive  requests/s over established TLS connections (wrk -c64)
#   handshakes  a new TCP + full TLS handshake per request (Connection: close)
#   full        a full handshake per connection, no session resumption
#               (openssl s_time -new, one connection at a time: client-bound,
#               so compare the CPU per handshake, not the rate)
# with the proxies' CPU time per request, reported as ratios to HAProxy.
# wrk keeps the TLS session across its reconnects, so `handshakes` measures
# what clients that resume get (tickets are on in both proxies); `full`
# measures the cost of a handshake from scratch.
# Loopback only; kills only the processes it started, by pid.
#
#   cargo build --release && benches/tls.sh
#   DURATION=8 ROUNDS=3 CONNS=64 OUT=target/bench benches/tls.sh
# Needs wrk, haproxy, nginx and openssl (../shared/bench/run.sh setup installs the first three).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${DURATION:=8}" "${ROUNDS:=3}" "${CONNS:=64}" "${OUT:=target/bench}"
: "${BREAKWATER:=target/release/breakwater}"
ORIGIN=19080
declare -A PORT=([haproxy]=19201 [breakwater]=19210)
declare -A PID=()
RUN="$(mktemp -d)"; mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null

for b in wrk haproxy nginx openssl "$BREAKWATER"; do
  command -v "$b" >/dev/null || { echo "missing: $b" >&2; exit 1; }
done

cleanup() { for p in "${PID[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 0.5
            for p in "${PID[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$RUN"; }
trap cleanup EXIT
wait_https() { for _ in $(seq 100); do curl -skf -o /dev/null "https://127.0.0.1:$1/" && return 0; sleep 0.1; done; return 1; }
tree() { local p=$1; echo "$p"; for c in $(pgrep -P "$p"); do tree "$c"; done; }
cpu_ticks() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }

# One ECDSA P-256 certificate for both proxies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$RUN/key.pem" -out "$RUN/key8.pem"
cat "$RUN/cert.pem" "$RUN/key.pem" > "$RUN/haproxy.pem"

cat > "$RUN/origin.conf" <<CONF
worker_processes 1; daemon off; pid $RUN/origin.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:$ORIGIN reuseport; location = / { return 200 "ok\n"; } } }
CONF
taskset -c 1 nginx -c "$RUN/origin.conf" -e stderr & PID[origin]=$!

cat > "$RUN/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:${PORT[haproxy]} ssl crt $RUN/haproxy.pem alpn h2,http/1.1
  default_backend be
backend be
  server origin 127.0.0.1:$ORIGIN
CONF
taskset -c 0 haproxy -db -f "$RUN/haproxy.cfg" & PID[haproxy]=$!

cat > "$RUN/breakwater.yaml" <<CONF
admin: { listen: 127.0.0.1:19912 }
listeners:
  - name: bench
    listen: 127.0.0.1:${PORT[breakwater]}
    tls: { certificates: [{ cert: $RUN/cert.pem, key: $RUN/key8.pem }] }
upstreams: { origin: { url: http://127.0.0.1:$ORIGIN, max_idle_per_host: 64 } }
routes: [ { name: all, match: { path_prefix: / }, upstream: origin } ]
access_log: { format: off }
CONF
taskset -c 0 "$BREAKWATER" run -c "$RUN/breakwater.yaml" >"$RUN/breakwater.log" 2>&1 & PID[breakwater]=$!

for t in haproxy breakwater; do
  wait_https "${PORT[$t]}" || { echo "$t did not answer; log:" >&2; cat "$RUN/$t.log" 2>/dev/null >&2; exit 1; }
done
sleep 1

measure() { # TARGET MODE → "target mode rps cpu_us_per_req" into $RUN/raw
  local t=$1 mode=$2 c0 c1 out rps reqs extra=()
  [ "$mode" = handshakes ] && extra=(-H "Connection: close")
  c0=$(cpu_ticks "${PID[$t]}")
  if [ "$mode" = full ]; then
    out=$(taskset -c 1 openssl s_time -connect "127.0.0.1:${PORT[$t]}" -new -www / -time "$DURATION" 2>&1)
    reqs=$(awk '/connections in [0-9]+ real seconds/{print $1}' <<<"$out")
    rps=$(awk -v r="${reqs:-0}" -v d="$DURATION" 'BEGIN{printf "%.1f", r/d}')
  else
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "${extra[@]}" "https://127.0.0.1:${PORT[$t]}/" 2>&1)
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out"); reqs=$(awk '/requests in/{print $1}' <<<"$out")
  fi
  c1=$(cpu_ticks "${PID[$t]}")
  grep -q 'Non-2xx' <<<"$out" && echo "warning: $t $mode: $(grep 'Non-2xx' <<<"$out")" >&2
  awk -v t="$t" -v m="$mode" -v rps="${rps:-0}" -v a="$c0" -v b="$c1" -v r="${reqs:-0}" -v hz="$(getconf CLK_TCK)" \
    'BEGIN{ printf "%s %s %s %s\n", t, m, rps, (r>0 ? (b-a)*1e6/hz/r : "nan") }' >> "$RUN/raw"
}

for _ in $(seq "$ROUNDS"); do
  for mode in keepalive handshakes full; do for t in haproxy breakwater; do measure "$t" "$mode"; done; done
done

python3 - "$RUN/raw" "$OUT/tls-latest.md" "$DURATION" "$ROUNDS" "$CONNS" <<'PY'
import statistics, sys, collections
raw, out, dur, rounds, conns = sys.argv[1:]
data = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(raw):
    t, mode, rps, cpu = line.split()
    data[mode][t].append((float(rps), float(cpu)))
rows = ["| mode | target | rps | rps vs HAProxy | CPU µs/req | CPU vs HAProxy |", "|---|---|---|---|---|---|"]
for mode in ("keepalive", "handshakes", "full"):
    med = {t: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for t, v in data[mode].items()}
    base = med.get("haproxy")
    for t in ("haproxy", "breakwater"):
        if t not in med:
            continue
        rps, cpu = med[t]
        rr = f"{rps / base[0]:.2f}" if base and base[0] else ""
        cr = f"{cpu / base[1]:.2f}" if base and base[1] else ""
        rows.append(f"| {mode} | {t} | {rps:.0f} | {rr} | {cpu:.1f} | {cr} |")
text = f"TLS bench: ECDSA P-256, {dur}s x {rounds} rounds, wrk -c{conns}, medians, proxies alone on CPU 0\n\n" + "\n".join(rows) + "\n"
open(out, "w").write(text)
print(text)
PY
