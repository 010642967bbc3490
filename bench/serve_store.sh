#!/usr/bin/env bash
# bench/serve_store.sh: REGISTER/s and MESSAGE/s through `luasip serve` with each store
# (memory, sqlite:FILE in a temp folder, redis://127.0.0.1:PORT on a redis-server this script
# starts on a free loopback port in a temp folder and stops by its PID), in one run.
#
# Per store, one serve (--no-auth, one process):
#   1. CPU per transaction at a fixed rate: serve's utime+stime (/proc/PID/stat) before and
#      after FIXED_RATE/s for SECONDS_PER_STEP s, over the transactions that got their 200
#      (and redis-server's own, beside it), the median of ROUNDS runs, for REGISTER (and, in
#      4, MESSAGE);
#   2. REGISTER/s: steps of rising rate, SECONDS_PER_STEP s each, each REGISTER a new AOR
#      (bench/sipp/register_new.xml: every 200 is a new binding written to the store); the
#      highest rate with no failed transaction;
#   3. once serve is idle again, the bindings the store holds (sqlite3 on the file, redis-cli
#      ZCARD on the expiry index; for memory serve's registrations gauge at --metrics) against
#      the REGISTERs that got a 200;
#   4. MESSAGE/s: bob registered to a sipp UAS, MESSAGEs to bob proxied to it (the shared
#      harness's scenarios, as bench/workers.sh), steps as in 2.
# sipp runs on the same cores as serve: at the top steps it is part of what is measured.
#
# usage: bench/serve_store.sh [STORE...]   (memory sqlite redis; default all three)
# env: REG_RATES, MSG_RATES (steps, "1000 2000 ..."), SECONDS_PER_STEP (5), FIXED_RATE (1000),
#      ROUNDS (3: the fixed-rate runs per figure, the median counts)
# From the repository root; ports 47060-47090 must be free.
set -u
shared=$(cd "${BENCH_SHARED:-../shared/bench}" && pwd)
repo=$(pwd)
stores=("$@"); [[ ${#stores[@]} -gt 0 ]] || stores=(memory sqlite redis)
read -r -a reg_rates <<<"${REG_RATES:-1000 2000 3000 4000 5000 6000 8000 10000}"
read -r -a msg_rates <<<"${MSG_RATES:-1000 2000 3000 4000 5000 6000}"
SECONDS_PER_STEP=${SECONDS_PER_STEP:-5}
FIXED_RATE=${FIXED_RATE:-1000}
ROUNDS=${ROUNDS:-3}
PORT=47060 METRICS_PORT=47061 UAS_PORT=47070 REG_PORT=47080 UAC_PORT=47090
busy=$(ss -Hlun 2>/dev/null | awk '{print $4}' | grep -E ':(47060|47070|47080|47090)$')
busy+=$(ss -Hltn 2>/dev/null | awk '{print $4}' | grep -E ':47061$')
if [[ -n $busy ]]; then echo "serve-store: ports busy ($busy); skipped"; exit 0; fi

work=$(mktemp -d)
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  wait 2>/dev/null
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# a free loopback TCP port for redis-server, from 47379 up
free_port() {
  local p
  for ((p = 47379; p < 47479; p++)); do
    ss -Hltn 2>/dev/null | awk '{print $4}' | grep -q ":$p\$" || { echo "$p"; return; }
  done
}

# sipp SCENARIO RATE COUNT [ARGS...] from the UAC port to serve; prints "ok failed retrans"
sipp_run() {
  local scenario=$1 rate=$2 count=$3; shift 3
  rm -f "$work/uac.csv"
  ( cd "$work" && sipp -sf "$scenario" "$@" -i 127.0.0.1 -p $UAC_PORT -r "$rate" -m "$count" \
      -timeout $((count / rate + 40))s -nostdin -trace_stat -stf uac.csv -fd 1 \
      127.0.0.1:$PORT >/dev/null 2>&1 )
  [[ -s $work/uac.csv ]] || { echo "0 $count 0"; return; }
  local hdr last c out=""
  hdr=$(head -n 1 "$work/uac.csv"); last=$(tail -n 1 "$work/uac.csv")
  for c in 'SuccessfulCall(C)' 'FailedCall(C)' 'Retransmissions(C)'; do
    out+="$(echo "$last" | cut -d';' -f"$(echo "$hdr" | tr ';' '\n' | grep -nxF "$c" | cut -d: -f1)") "
  done
  echo "$out"
}

# CPU-µs per transaction of PID over the ok ones: cpu_per TICKS OK
cpu_per() { awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "-" }'; }

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }

# fixed METHOD KEY SCENARIO [ARGS...]: serve's (and redis-server's) CPU per transaction at
# FIXED_RATE, ROUNDS times; the medians go to res[$name,KEY_cpu] and res[$name,KEY_rcpu].
# Called from bench_store (its srv, redis_pid, name, total_ok, total_sent).
fixed() {
  local method=$1 key=$2 scenario=$3; shift 3
  local i n=$((FIXED_RATE * SECONDS_PER_STEP)) t0 t1 r0 r1 ok failed retr per rper all="" rall=""
  for ((i = 1; i <= ROUNDS; i++)); do
    run=$((run + 1))
    local args=("$@"); [[ $key == reg ]] && args+=(-set run "f$run")
    t0=$(ticks "$srv"); r0=${redis_pid:+$(ticks "$redis_pid")}
    read -r ok failed retr < <(sipp_run "$scenario" "$FIXED_RATE" "$n" "${args[@]}")
    t1=$(ticks "$srv"); r1=${redis_pid:+$(ticks "$redis_pid")}
    [[ $key == reg ]] && total_ok=$((total_ok + ok)) total_sent=$((total_sent + n))
    per=$(cpu_per $((t1 - t0)) "$ok") rper=${redis_pid:+$(cpu_per $((r1 - r0)) "$ok")}
    all+="$per " rall+="${rper:-} "
    printf '  %-26s ok %-7s failed %-5s retrans %-5s serve %s CPU-µs each%s\n' "$method at $FIXED_RATE/s" \
      "$ok" "$failed" "$retr" "$per" "${redis_pid:+, redis-server $rper}"
  done
  res[$name,${key}_cpu]=$(echo "$all" | median)
  res[$name,${key}_rcpu]=${redis_pid:+$(echo "$rall" | median)}
}

declare -A res
run=0
bench_store() {
  local name=$1 store redis_pid="" rport=""
  case $name in
    memory) store=memory ;;
    sqlite) store="sqlite:$work/sqlite/serve.db" ;;
    redis)
      command -v redis-server >/dev/null || { echo "serve-store: no redis-server here; redis skipped"; return; }
      rport=$(free_port)
      mkdir -p "$work/redis"
      redis-server --bind 127.0.0.1 --port "$rport" --dir "$work/redis" --daemonize no \
        --logfile "$work/redis/log" & redis_pid=$!; pids+=("$redis_pid")
      for _ in $(seq 50); do [[ $(redis-cli -p "$rport" ping 2>/dev/null) == PONG ]] && break; sleep 0.1; done
      store="redis://127.0.0.1:$rport" ;;
    *) echo "serve-store: unknown store $name (want memory sqlite redis)"; return ;;
  esac
  ./bin/luasip serve --listen udp:127.0.0.1:$PORT --domain 127.0.0.1 --no-auth --quiet \
    --store "$store" --metrics 127.0.0.1:$METRICS_PORT > "$work/serve.log" 2>&1 & local srv=$!
  pids+=("$srv")
  sleep 1.5
  kill -0 "$srv" 2>/dev/null || { echo "serve-store: serve --store $store did not start:"; tail -5 "$work/serve.log"; stop_all; return; }
  echo
  echo "serve --store $store (pid $srv${redis_pid:+; redis-server pid $redis_pid})"

  # 1. CPU per REGISTER at the fixed rate
  local n ok failed retr total_ok=0 total_sent=0
  fixed REGISTER reg "$repo/bench/sipp/register_new.xml"

  # 2. REGISTER/s
  local best=0 r
  for r in "${reg_rates[@]}"; do
    n=$((r * SECONDS_PER_STEP)); run=$((run + 1))
    read -r ok failed retr < <(sipp_run "$repo/bench/sipp/register_new.xml" "$r" "$n" -set run "s$run")
    total_ok=$((total_ok + ok)) total_sent=$((total_sent + n))
    printf '  %-26s ok %-7s failed %-5s retrans %s\n' "REGISTER at $r/s" "$ok" "$failed" "$retr"
    if [[ ${failed:-1} == 0 && ${ok:-0} -gt 0 ]]; then best=$r; else break; fi
  done
  res[$name,reg]=$best

  # serve (and redis-server) may still be working through a queue after a step they could
  # not keep up with: wait until both are idle (under 5% of a core for a second), 120 s at most
  local waited=0 a b ra rb
  while ((waited < 120)); do
    a=$(ticks "$srv") ra=${redis_pid:+$(ticks "$redis_pid")}; sleep 1
    b=$(ticks "$srv") rb=${redis_pid:+$(ticks "$redis_pid")}; waited=$((waited + 1))
    (((b - a + ${rb:-0} - ${ra:-0}) * 100 < 5 * hz)) && break
  done
  ((waited > 1)) && echo "  (serve${redis_pid:+ and redis-server} busy for $((waited - 1)) s after the last REGISTER step)"

  # 3. the bindings the store holds against the REGISTERs that got a 200. serve's own count
  # (its registrations gauge) only for memory: /metrics reads every binding from the store
  # on the loop, seconds for tens of thousands in SQLite
  local in_store gauge=""
  [[ $name == memory ]] &&
    gauge=$(curl -s -m 10 "http://127.0.0.1:$METRICS_PORT/metrics" | awk '$1 == "luasip_registrations" {print $2}')
  case $name in
    sqlite) command -v sqlite3 >/dev/null &&
              in_store=$(sqlite3 "$work/sqlite/serve.db" 'SELECT count(*) FROM bindings' 2>&1) ;;
    redis)  in_store=$(redis-cli -p "$rport" ZCARD lsip:exp 2>&1) ;;
  esac
  # equal when no REGISTER failed; one that sipp gave up on (failed) may still have been written
  local count=${in_store:-${gauge:-}} verdict
  if [[ -z $count ]]; then verdict="not counted"
  elif [[ $count == "$total_ok" ]]; then verdict="match"
  elif [[ $count -gt $total_ok && $count -le $total_sent ]]; then
    verdict="+$((count - total_ok)): written, their 200 not counted by sipp (failed)"
  else verdict="MISMATCH"
  fi
  res[$name,bindings]="${count:--} / $total_ok (${verdict%%:*})"
  printf '  %-26s %s in the store%s, serve counts %s; REGISTERs sent %s, 200 OK %s: %s\n' "bindings" \
    "${in_store:--}" "$([[ $name == sqlite ]] && echo ' (sqlite3)'; [[ $name == redis ]] && echo ' (redis-cli)')" \
    "${gauge:--}" "$total_sent" "$total_ok" "$verdict"

  # 4. MESSAGE through serve to bob at a sipp UAS: CPU at the fixed rate, then the steps
  local try
  for try in 1 2 3; do
    ( cd "$work" && sipp -sf "$shared/sipp/register.xml" -s bob -set uasport $UAS_PORT -i 127.0.0.1 \
        -p $REG_PORT -m 1 -timeout 5s -nostdin 127.0.0.1:$PORT >/dev/null 2>&1 ) && break
    echo "  (bob's REGISTER failed, try $try)"
  done
  ( cd "$work" && exec sipp -sf "$shared/sipp/uas_message.xml" -i 127.0.0.1 -p $UAS_PORT -nostdin \
      -timeout 900s >/dev/null 2>&1 ) & pids+=($!)
  sleep 0.5
  fixed MESSAGE msg "$shared/sipp/uac_message.xml" -s bob
  best=0
  for r in "${msg_rates[@]}"; do
    n=$((r * SECONDS_PER_STEP))
    read -r ok failed retr < <(sipp_run "$shared/sipp/uac_message.xml" "$r" "$n" -s bob)
    printf '  %-26s ok %-7s failed %-5s retrans %s\n' "MESSAGE at $r/s" "$ok" "$failed" "$retr"
    if [[ ${failed:-1} == 0 && ${ok:-0} -gt 0 ]]; then best=$r; else break; fi
  done
  res[$name,msg]=$best
  stop_all
  sleep 1
}

echo
echo "Through serve per store: load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
for s in "${stores[@]}"; do bench_store "$s"; done
echo
echo "REGISTER/s and MESSAGE/s through luasip serve per store (highest step with no failed"
echo "transaction; steps of ${SECONDS_PER_STEP} s: REGISTER ${reg_rates[*]}, MESSAGE ${msg_rates[*]});"
echo "CPU-µs per transaction at $FIXED_RATE/s, median of $ROUNDS runs; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
printf '%-7s %-11s %-10s %-19s %-19s %-21s %s\n' store REGISTER/s MESSAGE/s "CPU-µs/REGISTER" \
  "CPU-µs/MESSAGE" "redis-server µs R/M" "bindings / 200s"
for s in "${stores[@]}"; do
  [[ -n ${res[$s,reg]:-} ]] || continue
  printf '%-7s %-11s %-10s %-18s %-18s %-20s %s\n' "$s" "${res[$s,reg]}" "${res[$s,msg]}" \
    "${res[$s,reg_cpu]}" "${res[$s,msg_cpu]}" \
    "$([[ -n ${res[$s,reg_rcpu]:-} ]] && echo "${res[$s,reg_rcpu]} / ${res[$s,msg_rcpu]}" || echo -)" \
    "${res[$s,bindings]}"
done
