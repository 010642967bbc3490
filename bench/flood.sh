#!/usr/bin/env bash
# bench/flood.sh: peak RSS of `luasip serve --no-auth` under a sipp flood, against a stated
# ceiling (a printed OK/OVER line, not a failure). Each flood runs on a fresh server.
#
# usage: bench/flood.sh [RATE [SECONDS]]   (default 3000 for 10 s), from the repository root
#   message:  MESSAGEs to bob, registered at a port where nothing listens, so every relayed
#             request is a client transaction retransmitted until Timer F (32 s)
#   register: REGISTERs, each for a new AOR (bench/sipp/register_flood.xml)
# env: FLOOD_RSS_CEILING_MB (default 400)
# The ceiling: a MESSAGE whose downstream never answers holds a server and a client
# transaction plus its suspended routing coroutine for 32 s (Timer F), about 10 KB in all;
# 3000/s for 10 s is 30 000 of them, so 400 MB. In general RSS is bounded by
# max_transactions (65536 by default, `--max-transactions N`) x ~10 KB.
set -u
rate=${1:-3000} secs=${2:-10}
CEILING_MB=${FLOOD_RSS_CEILING_MB:-400}
PORT=26060 SINK_PORT=26071 UAC_PORT=26090
here=$(pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; sleep 0.3
            for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
csv_col() {
  local hdr last n; hdr=$(head -n 1 "$1"); last=$(tail -n 1 "$1")
  n=$(echo "$hdr" | tr ';' '\n' | grep -n "^$2\$" | cut -d: -f1)
  echo "$last" | cut -d';' -f"$n"
}

echo
echo "Flood: luasip serve --no-auth, sipp at $rate/s for $secs s; peak RSS sampled every 0.2 s (ceiling $CEILING_MB MB)"
printf '%-9s %-7s %-6s %-8s %-7s %-8s %-9s %-9s %-9s %-6s\n' flood sent ok failed retrans "RSS0 MB" "peak MB" "end MB" "CPU-s" check
for kind in message register; do
  # serve's default backend (SQLite), a fresh file in the temp folder for each flood
  rm -f "$work"/flood.db*
  ./bin/luasip serve --listen "udp:127.0.0.1:$PORT" --domain 127.0.0.1 --no-auth --quiet \
    --store "sqlite:$work/flood.db" > "$work/serve.log" 2>&1 & srv=$!; pids+=($srv)
  sleep 1
  kill -0 "$srv" 2>/dev/null || { echo "flood: luasip serve did not start"; cat "$work/serve.log"; exit 1; }
  if [[ $kind == message ]]; then
    scenario=$here/../shared/bench/sipp/uac_message.xml
    ( cd "$work" && sipp -sf "$here/../shared/bench/sipp/register.xml" -s bob -set uasport $SINK_PORT \
        -i 127.0.0.1 -p $UAC_PORT -m 1 -timeout 5s -nostdin "127.0.0.1:$PORT" >/dev/null 2>&1 )
    service=bob
  else
    scenario=$here/bench/sipp/register_flood.xml service=flood
  fi
  r0=$(rss "$srv") peak=$r0 c0=$(awk '{print $14+$15}' "/proc/$srv/stat")
  ( cd "$work" && rm -f uac.csv && exec sipp -sf "$scenario" -s "$service" -i 127.0.0.1 -p $UAC_PORT \
      -r "$rate" -m $((rate * secs)) -l $((rate * secs)) -timeout $((secs + 3))s -nostdin -trace_stat -stf uac.csv -fd 1 \
      "127.0.0.1:$PORT" >/dev/null 2>&1 ) & sp=$!; pids+=($sp)
  while kill -0 "$sp" 2>/dev/null; do
    r=$(rss "$srv"); [[ -n $r && $r -gt $peak ]] && peak=$r
    sleep 0.2
  done
  r1=$(rss "$srv") c1=$(awk '{print $14+$15}' "/proc/$srv/stat")
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$srv/status")
  [[ $hwm -gt $peak ]] && peak=$hwm
  sent=$(csv_col "$work/uac.csv" 'TotalCallCreated') ok=$(csv_col "$work/uac.csv" 'SuccessfulCall(C)')
  failed=$(csv_col "$work/uac.csv" 'FailedCall(C)') retr=$(csv_col "$work/uac.csv" 'Retransmissions(C)')
  awk -v k="$kind" -v s="$sent" -v o="$ok" -v f="$failed" -v rt="$retr" -v r0="$r0" -v p="$peak" \
      -v r1="$r1" -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v cap="$CEILING_MB" 'BEGIN {
    printf "%-9s %-7s %-6s %-8s %-7s %-8.1f %-9.1f %-9.1f %-9.2f %-6s\n", k, s, o, f, rt, r0 / 1024, p / 1024,
      r1 / 1024, c / hz, (p / 1024 < cap ? "OK" : "OVER") }'
  kill "$srv"; wait "$srv" 2>/dev/null || true
done
exit 0
