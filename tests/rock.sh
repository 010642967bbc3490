#!/usr/bin/env bash
# tests/rock.sh ROCKSPEC OUT.src.rock: the source rock `luarocks pack ROCKSPEC` would make,
# built offline from this checkout's working tree (`make rock`).
# luarocks packs a git source as the rockspec plus the clone in a folder named after the
# URL's basename (luasip/); `luarocks build/install X.src.rock` unzips both and builds in
# that folder. The files are those git tracks or would track (not ignored), as they are now.
set -euo pipefail
spec=$1 out=$2
cd "$(dirname "$0")/.."
luarocks lint "$spec" >/dev/null
url=$(sed -n 's/^ *url *= *"\(.*\)".*/\1/p' "$spec" | head -n 1)
name=$(basename "$url" .git)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/$name"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$stage/$name"
cp "$spec" "$stage/"
rm -f "$out"
(cd "$stage" && zip -qr - "$(basename "$spec")" "$name") >"$out"
