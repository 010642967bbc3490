#!/usr/bin/env bash
# bench/ops.sh: what operating costs — CPU-µs per proxied MESSAGE of `luasip serve` plain
# (--quiet), with --metrics, with --capture (pcap), with its text log, with --log-format json,
# in the same run, through the shared harness (../shared/bench/run.sh). The variants take
# turns, BENCH_ROUNDS times (3), and the median counts: one run on the shared 2-core VM
# swings more than these differences.
# usage: bench/ops.sh [RATE:COUNT] (default 500:5000), from the repository root
set -u
RUN=${BENCH_RUN_SH:-../shared/bench/run.sh}
IFS=: read -r rate count <<<"${1:-500:5000}"
busy=$(ss -Hluan 2>/dev/null | awk '{print $4}' | grep -E ':(45060|45070|45080|45090)$')
if [[ -n $busy ]]; then echo "ops: ports busy ($busy); skipped"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base="exec ./bin/luasip serve --listen udp:127.0.0.1:45060 --domain 127.0.0.1 --no-auth --control $work/ctl --store sqlite:$work/ops.db"
declare -A variant=(
  [off]="$base --quiet"
  [metrics]="$base --quiet --metrics 127.0.0.1:0"
  [capture]="$base --quiet --capture $work/c.pcap"
  [text]="$base"
  [json]="$base --log-format json"
)
# text: serve's text log lines, which (like json) make every relay wait in Lua for its outcome
order=(off metrics capture text json)
ROUNDS=${BENCH_ROUNDS:-3}
declare -A all
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
echo
echo "Operating luasip serve: CPU-µs per proxied MESSAGE at $rate/s, $count each, median of $ROUNDS"
printf '%-9s %-6s %-6s %-7s %-11s\n' variant ok failed retrans "CPU-µs/msg"
for ((round = 1; round <= ROUNDS; round++)); do
  for v in "${order[@]}"; do
    line=$(PROXY_CMD="${variant[$v]}" bash "$RUN" cmd message "$rate" "$count" 2>&1 | tail -n 1)
    get() { echo "$line" | grep -o "$1=[0-9]*" | cut -d= -f2; }
    per=$(get proxy_cpu_us_per_call) ok=$(get ok)
    if [[ -z $per ]]; then echo "$v: run.sh said: $line"; continue; fi
    printf '%-9s %-6s %-6s %-7s %-11s\n' "$v" "$ok" "$(get failed)" "$(get retrans)" "$per"
    # a run that did not complete (a port another harness held, a proxy that did not start)
    # says nothing about the cost
    [[ $ok == "$count" ]] && all[$v]+="$per "
  done
done
echo
for v in "${order[@]}"; do
  m=$(echo "${all[$v]:-}" | median)
  printf '%-9s median %s CPU-µs per MESSAGE\n' "$v" "${m:--}"
done
