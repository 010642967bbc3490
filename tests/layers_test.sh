#!/usr/bin/env bash
# tests/layers_test.sh: tests/layers.sh passes on the built tree and fails, naming the symbol,
# when a lower layer calls a higher one: a copy of build/obj whose txn.o also calls
# sip_ep_cancel (endpoint.c), and one with an object that has no layer.
set -u
CC=${CC:-cc}
dir=${1:-build/obj}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
check() { # check NAME WANT(0|1) PATTERN OBJDIR
  local out rc
  out=$(tests/layers.sh "$4" 2>&1); rc=$?
  if [[ $rc -ne $2 ]] || ! grep -q -- "$3" <<<"$out"; then
    echo "not ok  layers: $1 (exit $rc, want $2)"; echo "$out" | sed 's/^/    /'; fail=1
  else
    echo "ok  layers: $1"
  fi
}

out=$(tests/layers.sh "$dir" 2>&1); rc=$?
if [[ $rc -eq 0 ]]; then echo "ok  layers: the tree keeps its layers"
else echo "not ok  layers: the tree keeps its layers"; echo "$out" | sed 's/^/    /'; fail=1; fi

mkdir "$work/up" "$work/new"
cp "$dir"/*.o "$work/up/"
cp "$dir"/*.o "$work/new/"
# the transaction layer calling the endpoint by name: the knot this check keeps out
printf 'int sip_ep_cancel(void *, void *, const char **);\nint txn_bad(void *t) { const char *e; return sip_ep_cancel(0, t, &e); }\n' > "$work/bad.c"
$CC -c -o "$work/bad.o" "$work/bad.c" && ld -r -o "$work/up/txn.o" "$dir/txn.o" "$work/bad.o" || exit 1
check "txn.o calling sip_ep_cancel fails, naming it" 1 \
  "txn.o (layer 4) uses sip_ep_cancel, defined by endpoint.o (layer 5)" "$work/up"
cp "$work/bad.o" "$work/new/stray.o"
check "an object with no layer fails" 1 "stray.o has no layer" "$work/new"
exit $fail
