#!/usr/bin/env bash
# bench/proxy.sh: `luasip serve` against Kamailio in the same run, through the shared side-by-side
# harness (../shared/bench/run.sh): one row per run and luasip/kamailio CPU per call per scenario.
#
# usage: bench/proxy.sh [SCENARIO:RATE:COUNT]...  (default message:500:5000 message:1000:10000
#        call:200:2000), from the repository root (run.sh runs PROXY_CMD there).
# BENCH_ROUNDS=N (default 3): every target runs N times, the targets taking turns, and the
# median counts. On the 2-core bench VM one run of the same build swings by up to 60%
# (88-162 CPU-us per MESSAGE in nine runs), more than the differences measured here.
set -u
RUN=${BENCH_RUN_SH:-../shared/bench/run.sh}
# the floor: a stateless UDP relay with no SIP in it (bench/floor_relay.c), what the kernel
# alone costs any proxy in this harness
FLOOR=${FLOOR_RELAY:-build/bench/floor_relay}
runs=("$@"); [[ ${#runs[@]} -gt 0 ]] || runs=(message:500:5000 message:1000:10000 call:200:2000)
# run.sh expects the proxy on udp:127.0.0.1:45060, REGISTER without auth, bob@127.0.0.1;
# `exec` makes the proxy run.sh's own child, so its CPU is the one read from /proc. Its store
# is serve's default backend (SQLite) in a temp folder: a bench run leaves no file behind.
store_dir=$(mktemp -d)
trap 'rm -rf "$store_dir"' EXIT
export PROXY_CMD=${PROXY_CMD:-"exec ./bin/luasip serve --listen udp:127.0.0.1:45060 --domain 127.0.0.1 --no-auth --quiet --store sqlite:$store_dir/proxy.db"}
# run.sh uses fixed ports (45060-45090): nothing else may hold them.
busy=$(ss -Hluan 2>/dev/null | awk '{print $4}' | grep -E ':(45060|45070|45080|45090)$')
if [[ -n $busy ]]; then echo "proxy: ports busy ($busy); skipped"; exit 0; fi
command -v kamailio >/dev/null || echo "proxy: no kamailio here; luasip rows only"

echo
echo "Proxy vs Kamailio ($RUN; kamailio = stateful.cfg, children=2; luasip = $PROXY_CMD)"
printf '%-9s %-8s %-6s %-6s %-6s %-7s %-8s %-11s\n' target scenario rate calls ok failed retrans "CPU-µs/call"
ROUNDS=${BENCH_ROUNDS:-3}
declare -A cpu all fails
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
for run in "${runs[@]}"; do
  IFS=: read -r scenario rate count <<<"$run"
  for ((round = 1; round <= ROUNDS; round++)); do
  for target in kamailio cmd floor; do
    [[ $target == kamailio ]] && ! command -v kamailio >/dev/null && continue
    [[ $target == floor && ! -x $FLOOR ]] && continue
    if [[ $target == floor ]]; then
      line=$(PROXY_CMD="exec $FLOOR" bash "$RUN" cmd "$scenario" "$rate" "$count" 2>&1 | tail -n 1)
    else
      line=$(bash "$RUN" "$target" "$scenario" "$rate" "$count" 2>&1 | tail -n 1)
    fi
    name=$([[ $target == cmd ]] && echo luasip || echo "$target")
    get() { echo "$line" | grep -o "$1=[0-9]*" | cut -d= -f2; }
    ok=$(get ok) failed=$(get failed) retr=$(get retrans) per=$(get proxy_cpu_us_per_call)
    if [[ -z $per ]]; then echo "$name $scenario $rate: run.sh said: $line"; continue; fi
    printf '%-9s %-8s %-6s %-6s %-6s %-7s %-8s %-11s\n' "$name" "$scenario" "$rate" "$count" "$ok" "$failed" "$retr" "$per"
    all[$name,$run]+="$per "
    fails[$name,$run]=$(( ${fails[$name,$run]:-0} + failed ))
  done
  done
  for name in kamailio luasip floor; do
    [[ -n ${all[$name,$run]:-} ]] && cpu[$name,$run]=$(echo "${all[$name,$run]}" | median)
  done
done
echo
echo "Medians of $ROUNDS runs each, CPU-µs per call: luasip / kamailio (target: <= 0.25, and no failed"
echo "call at 1000 MESSAGE/s and 200 calls/s); floor: a SIP-less relay, the kernel's share alone;"
echo "above it: (luasip - floor) / (kamailio - floor), the SIP work alone"
for run in "${runs[@]}"; do
  l=${cpu[luasip,$run]:-} k=${cpu[kamailio,$run]:-} f=${cpu[floor,$run]:-}
  if [[ -n $l && -n $k && $k -gt 0 ]]; then
    awk -v l="$l" -v k="$k" -v f="${f:--}" -v r="$run" -v lf="${fails[luasip,$run]:-0}" -v kf="${fails[kamailio,$run]:-0}" \
      'BEGIN { printf "%-20s %6d / %6d = %.3f %-10s floor %s (%.2f of kamailio", r, l, k, l / k, (l / k <= 0.25 ? "(met)" : "(not met)"), f, (f == "-" ? 0 : f / k)
               # above the floor: the SIP work alone, luasip against kamailio
               if (f != "-" && k > f) printf "; above it %.2f", (l - f) / (k - f)
               printf "); failed calls: luasip %d, kamailio %d\n", lf, kf }'
  fi
done
