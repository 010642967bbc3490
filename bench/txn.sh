#!/usr/bin/env bash
# bench/txn.sh: server transactions per second of a Lua UAS (bench/uas.lua, MESSAGE -> 200 from
# a handler) driven by a sipp UAC at bounded rates, with the UAS process's CPU per transaction.
#
# usage: bench/txn.sh [RATE:COUNT]...   (default 1000:5000 2000:10000), from the repository root
# CPU is utime+stime of the lua5.4 process (/proc/PID/stat, in clock ticks) across the sipp run;
# sched-µs is the same from /proc/PID/schedstat (ns resolution) as a cross-check.
set -u
LUA=${LUA:-lua5.4}
SCENARIO=${SIPP_UAC_MESSAGE:-../shared/bench/sipp/uac_message.xml}
UAS_PORT=${TXN_UAS_PORT:-46070} UAC_PORT=${TXN_UAC_PORT:-46090}
runs=("$@"); [[ ${#runs[@]} -gt 0 ]] || runs=(1000:5000 2000:10000)
scenario=$(cd "$(dirname "$SCENARIO")" && pwd)/$(basename "$SCENARIO")
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; sleep 0.3
            for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
sched_ns() { awk '{print $1}' "/proc/$1/schedstat"; }
csv_col() { # csv_col FILE NAME -> NAME's value in the last row of sipp's -stf CSV
  local hdr last n; hdr=$(head -n 1 "$1"); last=$(tail -n 1 "$1")
  n=$(echo "$hdr" | tr ';' '\n' | grep -n "^$2\$" | cut -d: -f1)
  echo "$last" | cut -d';' -f"$n"
}

"$LUA" bench/uas.lua --listen "udp:127.0.0.1:$UAS_PORT" > "$work/uas.out" 2>&1 & pids+=($!); uas=$!
for _ in $(seq 50); do grep -q ready "$work/uas.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/uas.out" || { echo "txn: the UAS did not start:"; cat "$work/uas.out"; exit 1; }
hz=$(getconf CLK_TCK)

echo
echo "Transactions: Lua UAS (bench/uas.lua, MESSAGE -> 200 from a handler) under a sipp UAC, UDP"
printf '%-7s %-7s %-7s %-7s %-8s %-9s %-11s %-13s %-9s\n' rate/s calls ok failed retrans "txn/s" "CPU-µs/txn" "sched-µs/txn" "UAS CPU%"
for run in "${runs[@]}"; do
  rate=${run%%:*} count=${run##*:}
  t0=$(ticks "$uas") s0=$(sched_ns "$uas") w0=$(date +%s%N)
  ( cd "$work" && rm -f uac.csv && exec sipp -sf "$scenario" -s uas -i 127.0.0.1 -p "$UAC_PORT" \
      -r "$rate" -m "$count" -timeout $((count / rate + 20))s -nostdin -trace_stat -stf uac.csv \
      -fd 1 "127.0.0.1:$UAS_PORT" >/dev/null 2>&1 ) & sp=$!; pids+=($sp)
  wait "$sp"
  t1=$(ticks "$uas") s1=$(sched_ns "$uas") w1=$(date +%s%N)
  ok=$(csv_col "$work/uac.csv" 'SuccessfulCall(C)'); failed=$(csv_col "$work/uac.csv" 'FailedCall(C)')
  retr=$(csv_col "$work/uac.csv" 'Retransmissions(C)')
  # Achieved rate: successful calls over sipp's own elapsed time (ElapsedTime(C) is h:m:s:us).
  el=$(csv_col "$work/uac.csv" 'ElapsedTime(C)')
  secs=$(echo "$el" | awk -F: '{printf "%.3f", $1*3600 + $2*60 + $3 + $4/1e6}')
  awk -v ok="$ok" -v secs="$secs" -v dt=$((t1 - t0)) -v hz="$hz" -v ds=$((s1 - s0)) -v dw=$((w1 - w0)) \
      -v rate="$rate" -v count="$count" -v failed="$failed" -v retr="$retr" 'BEGIN {
    tps = secs > 0 ? ok / secs : 0; cpu = ok > 0 ? dt * 1e6 / hz / ok : 0; sch = ok > 0 ? ds / 1e3 / ok : 0
    printf "%-7s %-7s %-7s %-7s %-8s %-9.0f %-11.1f %-13.1f %-9.0f\n", rate, count, ok, failed, retr, tps, cpu, sch, ds * 100 / dw }'
done
