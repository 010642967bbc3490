#!/usr/bin/env bash
# bench/workers.sh: the highest MESSAGE rate with no failed transaction through `luasip serve
# --workers 1` and `--workers 2` (SQLite store) and Kamailio with 1 and 2 children, in one run.
# sipp sends each MESSAGE from a socket of its own (-t un), as many phones would: SO_REUSEPORT
# gives one sender to one worker, so one socket would load one worker only.
#
# usage: bench/workers.sh [RATE...]   (default 1000 2000 3000 4000 5000 6000), SECONDS per step
# (default 5). From the repository root; ports 46060-46090 must be free.
set -u
here=$(cd "${BENCH_SHARED:-../shared/bench}" && pwd)
rates=("$@"); [[ ${#rates[@]} -gt 0 ]] || rates=(1000 2000 3000 4000 5000 6000)
SECONDS_PER_STEP=${SECONDS_PER_STEP:-5}
PROXY_PORT=46060 UAS_PORT=46070 REG_PORT=46080 UAC_PORT=46090
busy=$(ss -Hluan 2>/dev/null | awk '{print $4}' | grep -E ':(46060|46070|46080|46090)$')
if [[ -n $busy ]]; then echo "workers: ports busy ($busy); skipped"; exit 0; fi

work=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

# one step: TARGET's proxy already runs; bob registered, UAS up; prints "ok failed"
step() {
  local rate=$1 count=$(( $1 * SECONDS_PER_STEP ))
  rm -f "$work/uac.csv"
  local t0 t1
  t0=$(date +%s.%N)
  ( cd "$work" && sipp -sf "$here/sipp/uac_message.xml" -s bob -i 127.0.0.1 -p $UAC_PORT -t un -max_socket 10000 \
      -r "$rate" -m "$count" -timeout $((SECONDS_PER_STEP + 40))s -nostdin -trace_stat \
      -stf uac.csv -fd 1 127.0.0.1:$PROXY_PORT >/dev/null 2>&1 )
  t1=$(date +%s.%N)
  local hdr last col_ok col_failed
  hdr=$(head -n 1 "$work/uac.csv"); last=$(tail -n 1 "$work/uac.csv")
  col_ok=$(echo "$hdr" | tr ';' '\n' | grep -n '^SuccessfulCall(C)$' | cut -d: -f1)
  col_failed=$(echo "$hdr" | tr ';' '\n' | grep -n '^FailedCall(C)$' | cut -d: -f1)
  # sipp sends slower than asked when it cannot keep up (one process, on the same cores):
  # the rate reached is what the step ran at
  local ok
  ok=$(echo "$last" | cut -d';' -f"$col_ok")
  echo "$ok $(echo "$last" | cut -d';' -f"$col_failed") $(awk -v n="$ok" -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", n / (b - a) }')"
}

run_target() {
  local name=$1 cmd=$2
  bash -c "$cmd" > "$work/proxy.log" 2>&1 & pids+=($!)
  sleep 2
  kill -0 "${pids[0]}" 2>/dev/null || { echo "$name did not start:"; tail -5 "$work/proxy.log"; pids=(); return; }
  ( cd "$work" && sipp -sf "$here/sipp/register.xml" -s bob -set uasport $UAS_PORT -i 127.0.0.1 \
      -p $REG_PORT -m 1 -timeout 5s -nostdin 127.0.0.1:$PROXY_PORT >/dev/null 2>&1 )
  ( cd "$work" && exec sipp -sf "$here/sipp/uas_message.xml" -i 127.0.0.1 -p $UAS_PORT -nostdin \
      -timeout 600s >/dev/null 2>&1 ) & pids+=($!)
  sleep 0.5
  local best=0 r ok failed reached
  for r in "${rates[@]}"; do
    read -r ok failed reached < <(step "$r")
    printf '%-24s rate %-6s reached %-6s ok %-7s failed %s\n' "$name" "$r" "$reached" "$ok" "$failed"
    if [[ ${failed:-1} == 0 && ${ok:-0} -gt 0 ]]; then
      (( reached > best )) && best=$reached
    else
      break
    fi
  done
  echo "$name: highest rate reached without a failed MESSAGE: $best/s"
  results+=("$name $best")
  stop_all
  sleep 1
}

results=()
for n in 1 2; do
  rm -f "$work/w.db"*
  run_target "luasip --workers $n" \
    "exec ./bin/luasip serve --listen udp:127.0.0.1:$PROXY_PORT --domain 127.0.0.1 --no-auth --quiet --store sqlite:$work/w.db --workers $n"
done
if command -v kamailio >/dev/null; then
  for n in 1 2; do
    sed "s/45060/$PROXY_PORT/g; s/^children=.*/children=$n/" "$here/kamailio/stateful.cfg" > "$work/k.cfg"
    run_target "kamailio children=$n" "exec kamailio -f $work/k.cfg -P $work/k.pid -DD -E"
  done
fi
echo
echo "Highest MESSAGE rate reached without a failed transaction (steps asked: ${rates[*]}; ${SECONDS_PER_STEP} s each):"
printf '  %s\n' "${results[@]}"
