#!/usr/bin/env bash
# bench/proxy_ir.sh: instructions (callgrind Ir) in the `luasip serve` process per proxied
# MESSAGE transaction or per call, through the shared harness (../shared/bench/run.sh).
#
# usage: bench/proxy_ir.sh [SCENARIO:RATE:COUNT]...  (default message:200:1000 call:100:500),
#        from the repository root. Each scenario runs twice, COUNT and 2*COUNT; the figure is
#        the difference over COUNT, so start-up, module loading and the REGISTER cancel out.
# Instructions do not swing with the VM as CPU time does: compare builds by this figure.
set -u
RUN=${BENCH_RUN_SH:-../shared/bench/run.sh}
LUA=${LUA:-lua5.4}
runs=("$@"); [[ ${#runs[@]} -gt 0 ]] || runs=(message:200:1000 call:100:500)
command -v valgrind >/dev/null || { echo "proxy_ir: no valgrind here; skipped"; exit 0; }
busy=$(ss -Hluan 2>/dev/null | awk '{print $4}' | grep -E ':(45060|45070|45080|45090)$')
if [[ -n $busy ]]; then echo "proxy_ir: ports busy ($busy); skipped"; exit 0; fi
work=$(mktemp -d)
vg=
cleanup() { [[ -n $vg ]] && kill "$vg" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# Ir of one run. run.sh stops its proxy with SIGTERM and, half a second later, SIGKILL, too
# soon for callgrind to write its counts: the proxy runs in the background of the shell that
# run.sh starts, so that run.sh stops only that shell; this script then stops valgrind by its
# PID and waits for its output. The interpreter is named (not the #! line, through env) and
# huge pages are off (serve would exec itself again for them): callgrind must stay on the
# process that serves.
ir() {
  local scenario=$1 rate=$2 count=$3 out=$work/cg.out
  rm -f "$out" "$work/pid"
  PROXY_CMD="valgrind --tool=callgrind --callgrind-out-file=$out $LUA bin/luasip serve \
      --no-huge-pages --listen udp:127.0.0.1:45060 --domain 127.0.0.1 --no-auth --quiet --store sqlite:$work/ir.db >/dev/null 2>&1 &
      echo \$! > $work/pid; wait" \
    bash "$RUN" cmd "$scenario" "$rate" "$count" > "$work/run.out" 2>&1
  vg=$(cat "$work/pid" 2>/dev/null)
  [[ -n $vg ]] && kill "$vg" 2>/dev/null
  for _ in $(seq 100); do [[ -n $vg ]] && kill -0 "$vg" 2>/dev/null || break; sleep 0.1; done
  vg=
  grep -q " ok=$count failed=0" "$work/run.out" || { echo "proxy_ir: $(tail -n 1 "$work/run.out")" >&2; return 1; }
  # retransmissions by sipp (a loaded machine) are work too: shown beside the figure
  echo "$(awk '/^totals:/ { print $2 }' "$out") $(grep -o 'retrans=[0-9]*' "$work/run.out" | cut -d= -f2)"
}

echo
echo "Instructions per proxied transaction (callgrind Ir in luasip serve; run of 2N minus run of N)"
printf '%-9s %-6s %-6s %-14s %-14s %-10s %s\n' scenario rate N "Ir (N)" "Ir (2N)" "Ir/call" "retrans"
for run in "${runs[@]}"; do
  IFS=: read -r scenario rate count <<<"$run"
  read -r a ra < <(ir "$scenario" "$rate" "$count") && [[ -n ${a:-} ]] || continue
  read -r b rb < <(ir "$scenario" "$rate" $((count * 2))) && [[ -n ${b:-} ]] || continue
  printf '%-9s %-6s %-6s %-14s %-14s %-10s %s\n' "$scenario" "$rate" "$count" "$a" "$b" \
    $(((b - a) / count)) "$ra/$rb"
done
