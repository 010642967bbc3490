-- luasip from its main branch (`luarocks make` in a checkout builds this one);
-- luasip-0.1.0-1.rockspec is the release.
rockspec_format = "3.0"
package = "luasip"
version = "scm-1"
source = {
  url = "git+https://github.com/luasip/luasip.git",
}
description = {
  summary = "A SIP (RFC 3261) stack: C core, Lua 5.4 API with coroutines",
  detailed = [[
luasip is a SIP stack for Lua 5.4. A C core does the per-message work: zero-copy parsing and
serialization, the RFC 3261 transaction machines and their timers, dialogs, digest
authentication (MD5, SHA-256, SHA-512-256 over OpenSSL), a stateful forking proxy and UDP/TCP
transports on an epoll loop. Lua does policy: where a request goes, what a bot answers. Every
incoming request runs its handler in its own coroutine, and calls that wait (a request, a
MESSAGE, a call, a timer) suspend only that coroutine. The endpoint is pollable, so other
event loops (cqueues, luv) can drive it.

The rock installs the `sip` module (with its C part `sip.core`) and the `luasip` command:
`luasip serve` is a registrar, proxy and echo bot with digest authentication and a relay
policy; `luasip message|options|register` is a small client on the same stack.
]],
  homepage = "https://github.com/luasip/luasip",
  issues_url = "https://github.com/luasip/luasip/issues",
  license = "MIT",
  labels = { "sip", "voip", "rfc3261", "proxy", "registrar", "networking", "coroutines" },
}
supported_platforms = { "linux" }   -- epoll
dependencies = { "lua >= 5.4" }
-- Required libraries. luarocks checks each one and passes its _INCDIR/_LIBDIR to make. All
-- four are linked into sip.core today (Debian: libssl-dev libc-ares-dev libsqlite3-dev
-- libhiredis-dev); a library the code learns to run without should leave this list.
external_dependencies = {
  OPENSSL = { header = "openssl/evp.h", library = "crypto" },   -- EVP digests, RAND, TLS
  CARES = { header = "ares.h", library = "cares" },               -- RFC 3263 lookups in the loop
  SQLITE = { header = "sqlite3.h", library = "sqlite3" },         -- the embedded store
  HIREDIS = { header = "hiredis/async.h", library = "hiredis" },  -- the Redis store
}
build = {
  type = "make",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    OPENSSL_INCDIR = "$(OPENSSL_INCDIR)",
    OPENSSL_LIBDIR = "$(OPENSSL_LIBDIR)",
    CARES_INCDIR = "$(CARES_INCDIR)",
    CARES_LIBDIR = "$(CARES_LIBDIR)",
    SQLITE_INCDIR = "$(SQLITE_INCDIR)",
    SQLITE_LIBDIR = "$(SQLITE_LIBDIR)",
    HIREDIS_INCDIR = "$(HIREDIS_INCDIR)",
    HIREDIS_LIBDIR = "$(HIREDIS_LIBDIR)",
  },
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)/sip",
    INST_LUADIR = "$(LUADIR)",
  },
  install = { bin = { luasip = "bin/luasip" } },
  copy_directories = { "examples", "types" },
}
-- `luarocks test` in a checkout: every busted spec, through `make spec` (it builds first and
-- runs busted under lua5.4; Debian's lua-busted, or BUSTED="busted" for a luarocks one).
test = {
  type = "command",
  command = "make spec",
}
