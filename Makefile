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
LIBS        = -lssl -lcrypto -lcares -lsqlite3 -lhiredis

# gcc on x86 expands constant-size clears and copies of a few hundred bytes (msg_init,
# sip_msg_move, sip_uri_parse, sip_via_parse) as `rep stos`/`rep movs`, whose start-up cost
# was ~30 ns of a ~230 ns parse on the bench VM (AMD EPYC): SSE moves up to 512 bytes,
# the library above. Empty where the compiler takes no such option (clang, other arches).
STRINGOP_OPTS = -mmemcpy-strategy=vector_loop:512:noalign,libcall:-1:noalign \
                -mmemset-strategy=vector_loop:512:noalign,libcall:-1:noalign
STRINGOP := $(shell $(CC) $(STRINGOP_OPTS) -Werror -x c -c -o /dev/null /dev/null 2>/dev/null \
              && echo '$(STRINGOP_OPTS)')

SRCS  = $(wildcard csrc/*.c)
OBJS  = $(patsubst csrc/%.c,build/obj/%.o,$(SRCS))
CORE  = build/sip/core.so

# luarocks' make backend passes these
INST_LIBDIR ?= /usr/local/lib/lua/5.4/sip
INST_LUADIR ?= /usr/local/share/lua/5.4

DEBS = lua5.4 liblua5.4-dev libssl-dev openssl lua-busted lua-socket luarocks sip-tester sipsak \
       lua-cqueues clang libclang-rt-14-dev baresip linphone-cli lua-dkjson tshark kamailio \
       kamailio-tls-modules kamailio-websocket-modules libc-ares-dev dnsmasq-base sngrep prometheus \
       libsqlite3-dev libhiredis-dev redis-server chromium nodejs
# Only `make bench` needs these: the C parsers we compare against, callgrind, and the CLIs
# that count a store's bindings (serve-store).
BENCH_DEBS = libosip2-dev libsofia-sip-ua-dev valgrind kamailio kamailio-tls-modules sqlite3 curl

# Baseline harnesses live next to the shared corpus, outside the repository.
PARSER_BASELINES = ../shared/bench/parser
BENCH_BIN = build/bench

BUSTED = $(LUA) /usr/bin/busted
# The shared corpus the specs, the bench and the fuzzers read: ../shared/corpus beside this
# checkout, or beside the repository it was cloned from (a fresh `git clone` elsewhere);
# SIP_CORPUS=DIR overrides. Exported, so that spec/helper.lua and bench/parse.lua see it.
ORIGIN_DIR := $(shell git config --get remote.origin.url 2>/dev/null)
SIP_CORPUS ?= $(firstword $(wildcard ../shared/corpus $(ORIGIN_DIR)/../shared/corpus) ../shared/corpus)
export SIP_CORPUS

.PHONY: all deps bench-deps run test spec ctest layers interop bench clean install fuzz fuzz-build sanitize clean-asan web
all: $(CORE)

# The chat page's JsSIP (and, for the specs, ws and playwright-core) from npm into build/web/
# (git-ignored), at the versions web/package.json pins; served from there by ws: listeners.
# npm comes with Debian's nodejs or NodeSource's; Debian's npm package only if it is missing.
WEB_MODULES = build/web/node_modules/.installed
web: $(WEB_MODULES)
$(WEB_MODULES): web/package.json
	@command -v npm >/dev/null || $(MAKE) --no-print-directory deps DEBS=npm
	@mkdir -p build/web && cp web/package.json build/web/package.json
	@cd build/web && npm install --no-audit --no-fund --silent >/dev/null
	@touch $@

build/obj/%.o: csrc/%.c $(wildcard csrc/*.h) | build/obj
	@$(CC) $(WARN) $(CPPFLAGS_) $(STRINGOP) $(CFLAGS) -fPIC -fvisibility=hidden -c -o $@ $<

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

# TLS on 5061 with a self-signed certificate for localhost and 127.0.0.1, made once into
# $(RUN_TLS) (git-ignored); clients trust it with --ca $(RUN_TLS)/cert.pem.
RUN_TLS = tls-local
$(RUN_TLS)/cert.pem:
	@mkdir -p $(RUN_TLS)
	@openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
	  -keyout $(RUN_TLS)/key.pem -out $@ -subj /CN=localhost \
	  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
	@echo "made a self-signed certificate for localhost: $@ (trust it: luasip options sips:localhost:5061 --ca $@)"

# Registrations and stored messages last in var/ (git-ignored) across runs.
run: deps all web $(RUN_TLS)/cert.pem
	@mkdir -p var
	@echo "TLS on tls:127.0.0.1:5061; clients trust it with --ca $(RUN_TLS)/cert.pem"
	@echo "chat page: http://127.0.0.1:8080/ (SIP over ws:127.0.0.1:8080, wss:127.0.0.1:8443)"
	./bin/luasip serve --listen udp:127.0.0.1:5060 --listen tcp:127.0.0.1:5060 \
	  --listen tls:127.0.0.1:5061 --cert $(RUN_TLS)/cert.pem --key $(RUN_TLS)/key.pem \
	  --listen ws:127.0.0.1:8080 --listen wss:127.0.0.1:8443 \
	  --users examples/users.txt --store sqlite:var/luasip.db

# Everything CI runs: C tests, every spec (interop with sipp/sipsak included), the specs again
# on an ASan/UBSan build, and a short fuzz run (FUZZ_SECONDS per target).
test: deps all ctest layers spec sanitize
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)

TEST_FUZZ_SECONDS ?= 30

spec: all web
	@$(BUSTED) -o utfTerminal spec

# luasip against real peers on loopback: sipp with and without packet loss, sipsak and sipp
# doing digest, `luasip serve` as its own process driven by sipsak, sipp and Lua users,
# real softphones (baresip, Linphone) registering, messaging and calling through it, and
# serve and Kamailio's tls module verifying each other over TLS, a Lua bot at its websocket module.
INTEROP_SPECS = spec/interop_spec.lua spec/auth_peers_spec.lua spec/serve_interop_spec.lua \
                spec/phones_spec.lua spec/tls_interop_spec.lua spec/tls_phones_spec.lua \
                spec/ws_kamailio_spec.lua
interop: deps all
	@$(BUSTED) -o utfTerminal $(INTEROP_SPECS)

# C tests of the loop and its timers, the transaction map, framing and transports: plain C,
# no Lua, real sockets on loopback.
CTEST_OBJS = build/obj/loop.o build/obj/transport.o build/obj/frame.o build/obj/ratelimit.o build/obj/map.o \
             build/obj/tls.o build/obj/ws.o
build/test_transport: tests/c/test_transport.c $(CTEST_OBJS) $(wildcard csrc/*.h) | build/obj
	@$(CC) $(WARN) $(CPPFLAGS_) $(CFLAGS) -o $@ tests/c/test_transport.c $(CTEST_OBJS) $(LIBS)

ctest: build/test_transport
	@./build/test_transport

# The core's layers from its objects (nm): no file calls one of its layer or above by name;
# and the check itself, on a copy where txn.o calls the endpoint.
layers: all
	@tests/layers_test.sh build/obj

# Parser figures from Lua, libosip2 and sofia-sip on the same messages, then callgrind; then
# load figures over loopback with sipp: a Lua UAS's transactions (txn), an endpoint's memory
# (mem), `luasip serve` against Kamailio (proxy), peak RSS under a flood (flood); MSRP MB/s
# and messages/s between two endpoints (msrp); OPTIONS latency with and without DNS lookups
# hanging (dns); SIP over TLS through serve and through Kamailio's tls module, with
# handshakes per CPU-second (tls); serve with --metrics, --capture and JSON logs beside
# plain (ops); what a call of each store costs (store), the highest MESSAGE rate of
# `serve --workers 1|2` and Kamailio with 1|2 children (workers); REGISTER/s and MESSAGE/s
# through serve with each store (serve-store); MESSAGE transactions through serve with the
# client over UDP, TCP and WebSocket (ws).
# A subset: `make bench BENCH_PARTS="proxy flood"`. About 15 minutes for all of them
# (serve-store 9). Not by default: `ir`, callgrind's instructions in `serve` per proxied
# MESSAGE and call (a minute).
# Opt-in, ~15 minutes: `make bench BENCH_PARTS=steady`, 60 s rows past Timer J beside
# Kamailio (MESSAGE 2500/5000/highest failure-free, calls 400/800) and an overload row.
BENCH_PARTS ?= parse txn mem proxy flood msrp dns tls ops store workers serve-store ws
# bench/proxy.sh's runs, SCENARIO:RATE:COUNT each (empty: its defaults); a steady state past
# Timer J (32 s): `make bench BENCH_PARTS=proxy PROXY_RUNS="message:500:30000 call:200:12000"`
PROXY_RUNS ?=
# For the parser figures, all three parsers (ours under lua5.4, the osip and sofia
# harnesses it starts) run with glibc's heap trimming pushed out of the way: by default
# free() gives the top of the heap back to the kernel once 128 KB of it is free, which a GC
# cycle does at once, and the next allocations fault the pages in again. Which messages
# pay for that depends on where the heap stood, and made our figures swing by 2x from run
# to run. Same settings for all three, so the ratios stay fair.
BENCH_MALLOC ?= glibc.malloc.trim_threshold=67108864:glibc.malloc.top_pad=16777216

bench: deps bench-deps all $(BENCH_BIN)/clock.so $(BENCH_BIN)/osip_bench $(BENCH_BIN)/sofia_bench \
       $(BENCH_BIN)/floor_relay
	@for part in $(BENCH_PARTS); do case $$part in \
	  parse) GLIBC_TUNABLES=$(BENCH_MALLOC) $(LUA) bench/parse.lua --osip $(BENCH_BIN)/osip_bench --sofia $(BENCH_BIN)/sofia_bench --callgrind ;; \
	  txn)   LUA=$(LUA) bench/txn.sh ;; \
	  mem)   $(LUA) bench/mem.lua --expiry ;; \
	  proxy) bench/proxy.sh $(PROXY_RUNS) ;; \
	  flood) bench/flood.sh ;; \
	  msrp)  $(LUA) bench/msrp.lua ;; \
	  dns)   $(LUA) bench/dns.lua ;; \
	  tls)   $(LUA) bench/tls.lua ;; \
	  ops)   bench/ops.sh ;; \
	  store) $(LUA) bench/store.lua ;; \
	  workers) bench/workers.sh ;; \
	  serve-store) bench/serve_store.sh ;; \
	  ws)    $(LUA) bench/ws.lua ;; \
	  steady) bench/steady.sh ;; \
	  ir)    LUA=$(LUA) bench/proxy_ir.sh ;; \
	  *) echo "unknown bench part $$part (want: parse txn mem proxy flood msrp dns tls ops store workers serve-store ws steady ir)"; exit 2 ;; \
	esac || exit 1; done

$(BENCH_BIN)/floor_relay: bench/floor_relay.c | $(BENCH_BIN)
	@$(CC) $(WARN) -O2 -o $@ $<

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

# --- The rock and the API reference ------------------------------------------------------
# luarocks passes the include and library folders of the external dependencies its rockspec
# declares (OPENSSL_INCDIR, OPENSSL_LIBDIR); empty when building by hand.
CPPFLAGS_ += $(if $(OPENSSL_INCDIR),-I$(OPENSSL_INCDIR))
LIBS      += $(if $(OPENSSL_LIBDIR),-L$(OPENSSL_LIBDIR))
CPPFLAGS_ += $(if $(CARES_INCDIR),-I$(CARES_INCDIR))
LIBS      += $(if $(CARES_LIBDIR),-L$(CARES_LIBDIR))
CPPFLAGS_ += $(if $(SQLITE_INCDIR),-I$(SQLITE_INCDIR)) $(if $(HIREDIS_INCDIR),-I$(HIREDIS_INCDIR))
LIBS      += $(if $(SQLITE_LIBDIR),-L$(SQLITE_LIBDIR)) $(if $(HIREDIS_LIBDIR),-L$(HIREDIS_LIBDIR))
DEBS      += lua-ldoc lua-discount zip unzip

# `make test` runs these too, after sanitize: a second rule for test adds prerequisites.
.PHONY: rock rock-check docs
test: rock-check docs

# `make rock`: luasip-VERSION.src.rock from the working tree, offline: what `luarocks pack`
# makes of the release rockspec (its git source cloned as luasip/), from the files git
# tracks or would track, as they are now. `make rock-check` installs it into a throw-away
# tree and runs `require "sip"` and `luasip --help` from there (tests/rock_check.sh).
ROCK_VERSION = 0.1.0-1
ROCK = luasip-$(ROCK_VERSION).src.rock
rock:
	@tests/rock.sh luasip-$(ROCK_VERSION).rockspec $(ROCK)

rock-check: rock
	@tests/rock_check.sh $(ROCK)

# `make docs`: the LDoc reference of lua/sip/*.lua and sip.core (config.ld) in docs/api/;
# any LDoc warning fails it.
docs:
	@out=$$(ldoc . 2>&1) || { echo "$$out"; exit 1; }; \
	warn=$$(echo "$$out" | grep -v -e '^reading configuration from ' -e '^output written to '); \
	if [ -n "$$warn" ]; then echo "$$warn"; exit 1; fi

# --- Fuzzing (libFuzzer, clang) -------------------------------------------------------
# Every fuzz/fuzz_NAME.c is a target: built as build/fuzz/fuzz_NAME over the Lua-free core
# (csrc/*.c but lsip_*), seeded with every file of the shared corpus (and fuzz/seeds/NAME/),
# run FUZZ_SECONDS.
# Adding a target (say fuzz/fuzz_auth.c for csrc/auth.c) takes no Makefile edit; to run only
# some, `make fuzz FUZZ_TARGETS="auth"`. A crash, leak or sanitizer report fails `make fuzz`.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS    = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1
FUZZ_RUNFLAGS = -max_total_time=$(FUZZ_SECONDS) -max_len=70000 -timeout=10 \
                -dict=fuzz/sip.dict -print_final_stats=1
FUZZ_CORPUS  ?= $(SIP_CORPUS)
FUZZ_TARGETS ?= $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_OBJS     = $(patsubst csrc/%.c,build/fuzz/obj/%.o,$(filter-out csrc/lsip_%.c,$(SRCS)))
FUZZ_BINS     = $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_TARGETS))

build/fuzz/obj/%.o: csrc/%.c $(wildcard csrc/*.h) | build/fuzz/obj
	@$(FUZZ_CC) $(WARN) -D_GNU_SOURCE -Icsrc $(FUZZ_FLAGS) -c -o $@ $<

build/fuzz/fuzz_%: fuzz/fuzz_%.c $(FUZZ_OBJS) $(wildcard csrc/*.h)
	@$(FUZZ_CC) $(WARN) -D_GNU_SOURCE -Icsrc $(FUZZ_FLAGS) -o $@ $< $(FUZZ_OBJS) $(LIBS)

build/fuzz/obj:
	@mkdir -p $@

.SECONDARY: $(FUZZ_OBJS)
fuzz-build: $(FUZZ_BINS)

# Corpus files keep their path in the name (rfc4475/valid/x.sip -> rfc4475_valid_x.sip);
# a target's own seeds, fuzz/seeds/NAME/*, are added when that directory exists;
# new units found are kept in build/fuzz/corpus-NAME for the next run. Logs: build/fuzz/*.log.
fuzz: fuzz-build
	@fail=""; for t in $(FUZZ_TARGETS); do \
	  dir=build/fuzz/corpus-$$t; mkdir -p $$dir; \
	  (cd $(FUZZ_CORPUS) && find . -type f) | while read -r f; do \
	    cp "$(FUZZ_CORPUS)/$$f" "$$dir/$$(echo "$${f#./}" | tr / _)"; done; \
	  if [ -d fuzz/seeds/$$t ]; then cp fuzz/seeds/$$t/* $$dir/; fi; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  build/fuzz/fuzz_$$t $(FUZZ_RUNFLAGS) -artifact_prefix=build/fuzz/$$t- $$dir \
	    >build/fuzz/$$t.log 2>&1 || { tail -n 60 build/fuzz/$$t.log; fail="$$fail $$t"; }; \
	  grep -E '^stat::number_of_executed_units' build/fuzz/$$t.log; \
	done; \
	if [ -n "$$fail" ]; then echo "fuzz: failed:$$fail (inputs in build/fuzz/*-crash-*)"; exit 1; fi

# --- The spec suite on an ASan/UBSan build of the module ----------------------------------
# lua5.4 itself is not instrumented, so the sanitizer runtime is preloaded. Leaks are
# checked; the interpreter's own allocations at exit are suppressed (fuzz/lsan.supp).
# With gcc: `make clean-asan sanitize SAN_CC=gcc` (objects of both compilers don't mix).
SAN_CC    ?= clang
SAN_FLAGS  = -fsanitize=address,undefined -fno-omit-frame-pointer \
             -fno-sanitize-recover=undefined -g -O1
SAN_OBJS   = $(patsubst csrc/%.c,build-asan/obj/%.o,$(SRCS))
SAN_CORE   = build-asan/sip/core.so
SAN_IS_CLANG = $(findstring clang,$(SAN_CC))
SAN_RT     = $(shell $(SAN_CC) -print-file-name=$(if $(SAN_IS_CLANG),libclang_rt.asan-x86_64.so,libasan.so))
# clang links a module's ASan runtime only when asked; the rpath lets ldd find it.
SAN_LINK   = $(if $(SAN_IS_CLANG),-shared-libasan -Wl$(comma)-rpath$(comma)$(dir $(SAN_RT)))
comma      = ,

build-asan/obj/%.o: csrc/%.c $(wildcard csrc/*.h) | build-asan/obj
	@$(SAN_CC) $(WARN) $(CPPFLAGS_) $(SAN_FLAGS) -fPIC -c -o $@ $<

$(SAN_CORE): $(SAN_OBJS) | build-asan/sip
	@$(SAN_CC) $(SAN_FLAGS) $(SAN_LINK) $(LIBFLAG) -o $@ $(SAN_OBJS) $(LIBS)

build-asan/obj build-asan/sip:
	@mkdir -p $@

sanitize: $(SAN_CORE) web
	@LD_PRELOAD=$(SAN_RT) ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/fuzz/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(BUSTED) --cpath='build-asan/?.so' -o utfTerminal spec

clean-asan:
	rm -rf build-asan

clean:
	rm -rf build build-asan docs/api luasip-*.src.rock
