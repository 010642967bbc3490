#!/usr/bin/env bash
# tests/rock_check.sh X.src.rock: install the source rock into a fresh tree, as a user would,
# then load `sip` and run `luasip --help` from that tree only (`make rock-check`).
set -euo pipefail
rock=$(realpath "$1")
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
log=$tree/install.log
# luarocks runs the rock's make, which inherits nothing of ours but the job count
if ! MAKEFLAGS=-j2 nice luarocks --lua-version=5.4 --tree="$tree" install "$rock" >"$log" 2>&1; then
  cat "$log"; echo "rock-check: luarocks install $rock failed"; exit 1
fi
# the tree's paths only: the rock must bring everything `sip` needs
lpath="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua"
cpath="$tree/lib/lua/5.4/?.so"
cd "$tree"   # away from the checkout: nothing of it may be found
out=$(env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 LUA_PATH="$lpath" LUA_CPATH="$cpath" lua5.4 -e '
  local sip = require "sip"
  local m = assert(sip.parse(tostring(sip.request{ method = "OPTIONS", uri = "sip:a@b" })))
  assert(m.method == "OPTIONS" and m.uri == "sip:a@b")
  print(package.searchpath("sip", package.path), package.searchpath("sip.core", package.cpath))')
for f in $out; do
  case $f in "$tree"/*) ;; *) echo "rock-check: sip loaded from $f, not from $tree"; exit 1 ;; esac
done
help=$(env -u LUA_PATH -u LUA_CPATH "$tree/bin/luasip" --help)
echo "$help" | grep -q "luasip serve" || { echo "rock-check: luasip --help said: $help"; exit 1; }
echo "rock-check: $(basename "$rock") installs; require \"sip\" and luasip --help work from the tree"
