#!/usr/bin/env bash
# bench/steady.sh: sustained load, past Timer J (32 s), `luasip serve` beside Kamailio in the
# same run through the shared harness (../shared/bench/run.sh): MESSAGE at 2500 and 5000/s,
# then rising rates until one fails (the highest failure-free rate), calls at 400 and 800/s;
# each row with the proxy's peak memory (PSS summed over its processes, so Kamailio's shared
# memory counts once) and CPU-µs per transaction. Then the overload row: luasip at 1.5x the
# highest failure-free rate, then at once a light load on the same process (recovery).
#
# usage: bench/steady.sh, from the repository root; about 15 minutes. Opt-in:
#   make bench BENCH_PARTS=steady
# env: STEADY_SECONDS (60), STEADY_MESSAGE_RATES ("2500 5000"), STEADY_PROBE_RATES (rates
#      tried after those, rising, until one fails: "6000 7000 8000 9000 10000"),
#      STEADY_CALL_RATES ("400 800"), STEADY_TARGETS ("luasip kamailio"), STEADY_LUASIP_OPTS
#      (more serve options, e.g. "--overload-ms 0"),
#      STEADY_OVERLOAD (1: run the overload row), STEADY_PORT (45060: run.sh's ports; another
#      base runs a copy of run.sh on BASE, BASE+10, +20, +30, beside someone else's bench)
set -u
RUN=${BENCH_RUN_SH:-../shared/bench/run.sh}
SIPP_DIR=$(cd "$(dirname "$RUN")" && pwd)/sipp
PORT=${STEADY_PORT:-45060}
if [[ $PORT != 45060 ]]; then
  copy=$(mktemp)
  sed -e "s|^here=.*|here=$(dirname "$SIPP_DIR")|" -e "s/^PROXY_PORT=.*/PROXY_PORT=$PORT/" \
      -e "s/^UAS_PORT=.*/UAS_PORT=$((PORT + 10)) REG_PORT=$((PORT + 20)) UAC_PORT=$((PORT + 30))/" \
      "$RUN" > "$copy"
  RUN=$copy
fi
SECS=${STEADY_SECONDS:-60}
MRATES=${STEADY_MESSAGE_RATES:-"2500 5000"}
PROBE=${STEADY_PROBE_RATES-"6000 7000 8000 9000 10000"}   # empty: none
CRATES=${STEADY_CALL_RATES:-"400 800"}
TARGETS=${STEADY_TARGETS:-"luasip kamailio"}
# serve's default backend (SQLite) in a temp folder: a bench run leaves no file behind
store_dir=$(mktemp -d)
trap 'rm -rf "$store_dir"' EXIT
LUASIP="exec ./bin/luasip serve --listen udp:127.0.0.1:$PORT --domain 127.0.0.1 --no-auth --quiet --rate-limit 0 --store sqlite:$store_dir/steady.db ${STEADY_LUASIP_OPTS:-}"

busy=$(ss -Hluan 2>/dev/null | awk '{print $4}' | grep -E ":($PORT|$((PORT + 10))|$((PORT + 20))|$((PORT + 30)))\$")
if [[ -n $busy ]]; then echo "steady: ports busy ($busy); skipped"; exit 0; fi
command -v kamailio >/dev/null || TARGETS=${TARGETS//kamailio/}

# Peak PSS (KB) of the processes holding udp:127.0.0.1:$PORT, sampled every second into $1
# until $2 disappears.
sample_pss() {
  local out=$1 flag=$2 peak=0 sum p v
  while [[ -e $flag ]]; do
    sum=0
    for p in $(ss -Hlunp "sport = :$PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
      v=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null)
      sum=$((sum + ${v:-0}))
    done
    ((sum > peak)) && peak=$sum && echo "$peak" > "$out"
    sleep 1
  done
}

# One run.sh row: target scenario rate -> prints the row, sets $row_failed
row() {
  local target=$1 scenario=$2 rate=$3 count=$(($3 * SECS)) line mem
  local flag pssf
  flag=$(mktemp) pssf=$(mktemp)
  echo 0 > "$pssf"
  sample_pss "$pssf" "$flag" & local sampler=$!
  # the result line (a "Killed" notice of the harness's cleanup may come after it)
  if [[ $target == luasip ]]; then
    line=$(PROXY_CMD=$LUASIP bash "$RUN" cmd "$scenario" "$rate" "$count" 2>&1 | grep ' ok=' | tail -n 1)
  else
    line=$(bash "$RUN" "$target" "$scenario" "$rate" "$count" 2>&1 | grep ' ok=' | tail -n 1)
  fi
  rm -f "$flag"
  wait "$sampler" 2>/dev/null
  mem=$(( $(cat "$pssf") / 1024 ))
  rm -f "$pssf"
  get() { echo "$line" | grep -o "$1=[0-9]*" | cut -d= -f2; }
  local ok failed retr per
  ok=$(get ok) failed=$(get failed) retr=$(get retrans) per=$(get proxy_cpu_us_per_call)
  if [[ -z $per ]]; then echo "$target $scenario $rate: run.sh said: $line"; row_failed=1; return; fi
  printf '%-9s %-8s %-6s %-4s %-8s %-8s %-7s %-8s %-8s %s\n' "$target" "$scenario" "$rate" "$SECS" \
    "$count" "$ok" "$failed" "$retr" "$mem" "$per"
  row_failed=$(( failed > 0 || ok < count ))
}

header() {
  printf '%-9s %-8s %-6s %-4s %-8s %-8s %-7s %-8s %-8s %s\n' target scenario rate s offered ok \
    failed retrans "peak MB" "CPU-µs/txn"
}

echo
echo "Steady state: ${SECS} s per row ($RUN; kamailio = stateful.cfg, children=2; luasip = $LUASIP)"
echo "CPU-µs per MESSAGE transaction or per call; peak MB: PSS of the proxy's processes"
header
# the highest failure-free MESSAGE rate for luasip: the listed rates, then rising ones until
# one fails
best=0 lowest=
for rate in $MRATES; do
  for t in $TARGETS; do
    row "$t" message "$rate"
    [[ $t == luasip ]] && ((!row_failed && rate > best)) && best=$rate
  done
  lowest=${lowest:-$rate}
done
for rate in $PROBE; do
  row luasip message "$rate"
  ((row_failed)) && break
  best=$rate
done
if ((best == 0)); then
  echo "no failure-free MESSAGE rate for luasip here; the overload row takes $lowest/s"
  best=$lowest
else
  echo "highest failure-free MESSAGE rate for luasip here: $best/s"
fi
for t in $TARGETS; do [[ $t != luasip ]] && row "$t" message "$best"; done
for rate in $CRATES; do
  for t in $TARGETS; do row "$t" call "$rate"; done
done

[[ ${STEADY_OVERLOAD:-1} == 1 ]] || exit 0

# --- overload: 1.5x the best rate for SECS/2, then 1000/s for 10 s on the same process -------
over=$((best * 3 / 2)) osecs=$((SECS / 2)) calm=1000
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$work" "$store_dir"; }
trap cleanup EXIT
bash -c "$LUASIP" > "$work/proxy.log" 2>&1 & pids+=($!); main=$!
sleep 1.5
( cd "$work" && sipp -sf "$SIPP_DIR/register.xml" -s bob -set uasport $((PORT + 10)) -i 127.0.0.1 -p $((PORT + 20)) -m 1 \
    -timeout 5s -nostdin 127.0.0.1:$PORT >/dev/null 2>&1 )
( cd "$work" && exec sipp -sf "$SIPP_DIR/uas_message.xml" -i 127.0.0.1 -p $((PORT + 10)) -nostdin -timeout 300s \
    >/dev/null 2>&1 ) & pids+=($!)
sleep 0.5
ticks() { awk '{ print $14 + $15 }' "/proc/$main/stat"; }
# uac NAME RATE SECONDS: a sipp UAC run; prints ok failed unexpected(503s) retrans
uac() {
  ( cd "$work" && sipp -sf "$SIPP_DIR/uac_message.xml" -s bob -i 127.0.0.1 -p $((PORT + 30)) -r "$2" \
      -m $(($2 * $3)) -timeout $(($3 + 40))s -nostdin -trace_stat -stf "$1.csv" -fd 1 \
      127.0.0.1:$PORT >/dev/null 2>&1 )
  local hdr last
  hdr=$(head -n 1 "$work/$1.csv") last=$(tail -n 1 "$work/$1.csv")
  col() { echo "$hdr" | tr ';' '\n' | grep -n "^$1\$" | cut -d: -f1; }
  val() { echo "$last" | cut -d';' -f"$(col "$1")"; }
  echo "$(val 'SuccessfulCall(C)') $(val 'FailedCall(C)') $(val 'FailedUnexpectedMessage(C)') $(val 'Retransmissions(C)')"
}
t0=$(ticks) s0=$(date +%s.%N)
read -r ok failed shed retr < <(uac over "$over" "$osecs")
s1=$(date +%s.%N) t1=$(ticks)
read -r rok rfailed _ rretr < <(uac calm "$calm" 10)
hz=$(getconf CLK_TCK)
echo
echo "Overload: luasip at ${over}/s (1.5 x $best) for ${osecs} s, then ${calm}/s for 10 s on the same process"
awk -v ok="$ok" -v f="$failed" -v shed="$shed" -v r="$retr" -v s0="$s0" -v s1="$s1" -v n=$((over * osecs)) \
    -v cpu=$(( (t1 - t0) * 1000000 / hz )) \
  'BEGIN { printf "offered %d: ok %d (%.0f/s over %.1f s), failed %d of which 503 %d, sipp retransmissions %d, CPU-us per ok %d\n",
           n, ok, ok / (s1 - s0), s1 - s0, f, shed, r, ok ? cpu / ok : 0 }'
echo "recovery at ${calm}/s right after: ok $rok, failed $rfailed, retransmissions $rretr"
