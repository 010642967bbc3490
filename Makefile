# luasip: build the C core + binding as build/sip/core.so, run specs, benches, interop.
# `make run` and `make test` install missing Debian packages first (when run as root).

LUA        ?= lua5.4
LUA_INCDIR ?= /usr/include/lua5.4
CC         ?= cc
OPT        ?= -O2 -g
CFLAGS     ?= $(OPT)
WARN        = -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter
CPPFLAGS_   = -D_GNU_SOURCE -I$(LUA_INCDIR) -Icsrc
LIBFLAG    ?= -shared
LIBS        = -lssl -lcrypto

SRCS  = $(wildcard csrc/*.c)
OBJS  = $(patsubst csrc/%.c,build/obj/%.o,$(SRCS))
CORE  = build/sip/core.so

# luarocks' make backend passes these
INST_LIBDIR ?= /usr/local/lib/lua/5.4/sip
INST_LUADIR ?= /usr/local/share/lua/5.4

DEBS = lua5.4 liblua5.4-dev libssl-dev lua-busted luarocks sip-tester sipsak lua-cqueues
# Only `make bench` needs these: the C parsers we compare against, and callgrind.
BENCH_DEBS = libosip2-dev libsofia-sip-ua-dev valgrind

# Baseline harnesses live next to the shared corpus, outside the repository.
PARSER_BASELINES = ../shared/bench/parser
BENCH_BIN = build/bench

BUSTED = $(LUA) /usr/bin/busted

.PHONY: all deps bench-deps run test spec ctest interop bench clean install
all: $(CORE)

build/obj/%.o: csrc/%.c $(wildcard csrc/*.h) | build/obj
	@$(CC) $(WARN) $(CPPFLAGS_) $(CFLAGS) -fPIC -c -o $@ $<

$(CORE): $(OBJS) | build/sip
	@$(CC) $(LIBFLAG) -o $@ $(OBJS) $(LIBS)

build/obj build/sip $(BENCH_BIN):
	@mkdir -p $@

# Install what is missing (Debian 12, as root); quiet when all is there.
deps bench-deps: PKGS = $(if $(filter bench-deps,$@),$(BENCH_DEBS),$(DEBS))
deps bench-deps:
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

run: deps all
	./bin/luasip serve --listen udp:127.0.0.1:5060 --listen tcp:127.0.0.1:5060 --users examples/users.txt

test: deps all spec

spec: all
	@$(BUSTED) -o utfTerminal spec

# luasip against real sipp peers on loopback, with and without packet loss.
interop: deps all
	@$(BUSTED) -o utfTerminal spec/interop_spec.lua

# C tests of the loop, framing and transports: plain C, no Lua, real sockets on loopback.
CTEST_OBJS = build/obj/loop.o build/obj/transport.o build/obj/frame.o
build/test_transport: tests/c/test_transport.c $(CTEST_OBJS) $(wildcard csrc/*.h) | build/obj
	@$(CC) $(WARN) $(CPPFLAGS_) $(CFLAGS) -o $@ tests/c/test_transport.c $(CTEST_OBJS)

ctest: build/test_transport
	@./build/test_transport

# Parser figures from Lua, libosip2 and sofia-sip on the same messages, then callgrind.
bench: deps bench-deps all $(BENCH_BIN)/clock.so $(BENCH_BIN)/osip_bench $(BENCH_BIN)/sofia_bench
	@$(LUA) bench/parse.lua --osip $(BENCH_BIN)/osip_bench --sofia $(BENCH_BIN)/sofia_bench --callgrind

$(BENCH_BIN)/clock.so: bench/clock.c | $(BENCH_BIN)
	@$(CC) $(WARN) $(CPPFLAGS_) $(CFLAGS) -fPIC $(LIBFLAG) -o $@ $<

$(BENCH_BIN)/osip_bench: $(PARSER_BASELINES)/osip_bench.c | bench-deps $(BENCH_BIN)
	@$(CC) -O2 -o $@ $< -losipparser2

$(BENCH_BIN)/sofia_bench: $(PARSER_BASELINES)/sofia_bench.c | bench-deps $(BENCH_BIN)
	@$(CC) -O2 -I/usr/include/sofia-sip-1.12 -o $@ $< -lsofia-sip-ua

install: all
	mkdir -p $(INST_LIBDIR) $(INST_LUADIR)/sip
	cp $(CORE) $(INST_LIBDIR)/core.so
	cp lua/sip/*.lua $(INST_LUADIR)/sip/

clean:
	rm -rf build
