rockspec_format = "3.0"
package = "luasip"
version = "scm-1"
source = { url = "git+file://." }
description = {
  summary = "A SIP (RFC 3261) stack: C core, Lua 5.4 API with coroutines",
  license = "MIT",
}
dependencies = { "lua >= 5.4" }
external_dependencies = { OPENSSL = { header = "openssl/evp.h" }, CARES = { header = "ares.h" } }
build = {
  type = "make",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
  },
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)/sip",
    INST_LUADIR = "$(LUADIR)",
  },
  install = { bin = { luasip = "bin/luasip" } },
}
