#!/usr/bin/env bash
# tests/layers.sh: the C core's layers, checked from the object files. Each object may use only
# symbols defined by objects of a lower layer (its own are its own): a file that calls one of
# its layer or above by name fails the check, named with the symbol, so csrc/ files call each
# other in no loop (STYLE.md rule 10). An upper layer hears from a lower one through handlers.
#
# usage: tests/layers.sh [OBJDIR]   (default build/obj); exit 0 when the layering holds.
# A new csrc/ file gets a line below: the layer of what it is, above everything it calls.
set -u
dir=${1:-build/obj}

# layer number, then the objects on it (the file names without .o), lowest first
layers='
0 chars map rand frame ratelimit loop log tls ws
1 transport uri auth msrp stream redis
2 msg dest dns
3 build capture txnwait
4 txn
5 endpoint
6 proxy dialog
7 lsip_msg lsip_auth lsip_thp lsip_dns lsip_msrp lsip_sqlite lsip_proc
8 lsip_ep lsip_dialog
9 lsip_ops lsip_redis
10 lsip_core
'
declare -A layer
while read -r n names; do
  [[ -n $n ]] || continue
  for f in $names; do layer[$f]=$n; done
done <<<"$layers"

shopt -s nullglob
objs=("$dir"/*.o)
if [[ ${#objs[@]} -eq 0 ]]; then echo "layers: no objects in $dir (make first)"; exit 2; fi

fail=0
declare -A owner   # symbol -> the object that defines it
for o in "${objs[@]}"; do
  f=$(basename "$o" .o)
  if [[ -z ${layer[$f]:-} ]]; then
    echo "layers: $f.o has no layer: give csrc/$f.c one in tests/layers.sh"
    fail=1
    continue
  fi
  while read -r sym; do owner[$sym]=$f; done < <(nm --defined-only -g "$o" | awk 'NF == 3 { print $3 }')
done
for o in "${objs[@]}"; do
  f=$(basename "$o" .o)
  [[ -n ${layer[$f]:-} ]] || continue
  while read -r sym; do
    d=${owner[$sym]:-}
    [[ -n $d ]] || continue   # the C library, OpenSSL, Lua
    if (( ${layer[$d]} >= ${layer[$f]} )); then
      echo "layers: $f.o (layer ${layer[$f]}) uses $sym, defined by $d.o (layer ${layer[$d]}): a lower layer names no function of its own layer or above"
      fail=1
    fi
  done < <(nm -u "$o" | awk '{ print $NF }')
done
exit $fail
