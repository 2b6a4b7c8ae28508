# postern - build, test, run.  `make` builds every program into bin/ and
# installs nothing.  See README.md.
#
# Layout the rules discover:
#   lib/*.c, queue/*.c      -> $(OBJ)/libpostern.a  (queue/: the queue's layout,
#                              envelope format and commit protocol, docs/QUEUE.md)
#   daemons/<prog>/*.c      -> $(BIN)/<prog>     (LIBS_<prog> adds libraries)
#   scripts/<prog>.sh       -> $(BIN)/<prog>     (operator shell tools, copied; not deps, run-demo)
#   conf/*                  the example configuration (installed to $(PREFIX)/share/postern)
#   service/{run,notification-fd,log/run}  the s6 service templates postern-setup fills in
#   tests/unit/check_*.c    -> $(OBJ)/tests/check_*  (Check unit tests)

CC      ?= cc
BIN     ?= bin
OBJ     ?= build
SAN     ?=

WARN    = -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla -Wstrict-prototypes \
          -Wmissing-prototypes -Wno-unused-parameter
HARDEN  = -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fstack-clash-protection -fPIE
CSTD    = -std=c11 -D_GNU_SOURCE
OPT     = -O2 -g
ifeq ($(SAN),1)
OPT     = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
HARDEN  = -fstack-protector-strong -fPIE
LDSAN   = -fsanitize=address,undefined
endif
CFLAGS_ALL  = $(CSTD) $(OPT) $(WARN) $(HARDEN) -Ilib -Iqueue $(CFLAGS)
LDFLAGS_ALL = -pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack $(LDSAN) $(LDFLAGS)

PKG_SODIUM = $(shell pkg-config --libs libsodium 2>/dev/null || echo -lsodium)
PKG_SSL    = $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
PKG_CHECK  = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck)

# per-program libraries (queue-inject stays libc-only: DESIGN.md section 7)
LIBS_auth-checker    = $(PKG_SODIUM)
LIBS_postern-user    = $(PKG_SODIUM)
LIBS_pop3-listener   = $(PKG_SODIUM)
LIBS_tls-proxy       = $(PKG_SSL)
LIBS_remote-deliverer = $(PKG_SSL) -lresolv
LIBS_smtp-listener   = $(PKG_SODIUM)
LIBS_queue-manager   = $(PKG_SODIUM)
# per-program link flags: queue-inject is exec'd once per message, so static
# (libc only, no dynamic loader work); smtp-listener forks a monitor and a
# session for every connection, and a static image has fewer mappings and
# fewer pages to copy on write and tear down (0.30 against 0.42 ms of CPU per
# connection here; bench/README.md). It is exec'd once, so static glibc's
# start-up cost does not matter. Not under the sanitizers.
ifneq ($(SAN),1)
LDFLAGS_queue-inject = -static-pie
LDFLAGS_smtp-listener = -static-pie
endif

# queue-inject is linked against musl where musl-gcc exists (deps.sh installs
# musl-tools): static glibc's start-up probes the CPU with cpuid, which traps
# to the hypervisor on a VM, and costs ~0.65 ms of every message's exec
# (808 vs 175 us for an empty static-pie program here; bench/README.md).
# Only the modules it uses are built again, into $(OBJ)/musl.  MUSL=0, or a
# sanitizer build, keeps glibc.
# musl-gcc's specs cannot make a static PIE (they always name the dynamic
# loader), so the link is spelled out: rcrt1.o self-relocates, no PT_INTERP.
MUSL_CC  ?= $(shell command -v musl-gcc 2>/dev/null)
MUSL_LIB ?= /usr/lib/$(shell uname -m)-linux-musl
MUSL     ?= $(if $(and $(MUSL_CC),$(wildcard $(MUSL_LIB)/rcrt1.o)),1,0)
ifeq ($(SAN),1)
MUSL    = 0
endif
QI_LIB  = lib/buf queue/envelope lib/log lib/privdrop lib/privuser queue/queue_inject queue/queue_path

LIB_SRC   = $(sort $(wildcard lib/*.c queue/*.c))
LIB_OBJ   = $(LIB_SRC:%.c=$(OBJ)/%.o)
PROGS     = $(sort $(notdir $(wildcard daemons/*)))
# operator tools only: deps.sh and run-demo.sh are build helpers, run in place
SCRIPTS   = $(filter-out deps run-demo,$(sort $(basename $(notdir $(wildcard scripts/*.sh)))))
UNIT_SRC  = $(sort $(wildcard tests/unit/check_*.c))
UNIT_BIN  = $(UNIT_SRC:tests/unit/%.c=$(OBJ)/tests/%)
TEST_HELPERS_SRC = $(sort $(wildcard tests/helpers/*.c))
TEST_HELPERS = $(TEST_HELPERS_SRC:tests/helpers/%.c=$(OBJ)/tests/helpers/%)

all: $(PROGS:%=$(BIN)/%) $(SCRIPTS:%=$(BIN)/%)

$(OBJ)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

$(OBJ)/libpostern.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

define prog_rule
$(BIN)/$(1): $(patsubst %.c,$(OBJ)/%.o,$(wildcard daemons/$(1)/*.c)) $(OBJ)/libpostern.a
	@mkdir -p $(BIN)
	$$(CC) $$(LDFLAGS_ALL) $$(LDFLAGS_$(1)) -o $$@ $$(filter %.o,$$^) $(OBJ)/libpostern.a $$(LIBS_$(1))
endef
ifeq ($(MUSL),1)
$(foreach p,$(filter-out queue-inject,$(PROGS)),$(eval $(call prog_rule,$(p))))
$(OBJ)/musl/%.o: %.c
	@mkdir -p $(dir $@)
	$(MUSL_CC) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<
$(BIN)/queue-inject: $(patsubst %.c,$(OBJ)/musl/%.o,$(wildcard daemons/queue-inject/*.c)) $(QI_LIB:%=$(OBJ)/musl/%.o)
	@mkdir -p $(BIN)
	$(CC) -nostdlib -static-pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack -Wl,-z,text $(LDFLAGS) -o $@ \
	  $(MUSL_LIB)/rcrt1.o $(MUSL_LIB)/crti.o $$($(CC) -print-file-name=crtbeginS.o) \
	  $^ -L$(MUSL_LIB) -lc $$($(CC) -print-libgcc-file-name) \
	  $$($(CC) -print-file-name=crtendS.o) $(MUSL_LIB)/crtn.o
else
$(foreach p,$(PROGS),$(eval $(call prog_rule,$(p))))
endif

$(BIN)/%: scripts/%.sh
	@mkdir -p $(BIN)
	cp $< $@
	chmod 755 $@

# postern-setup finds the service templates beside itself (the source tree's
# service/ next to bin/, or PREFIX/share/postern/service once installed), and
# failing that in the tree it was built from, whose path is written into its
# BUILT_FROM line here (for a BIN elsewhere: make sanitize's build-san/bin, a
# copy of bin/).  A path a shell could misread is left out.
$(BIN)/postern-setup: scripts/postern-setup.sh
	@mkdir -p $(BIN)
	case '$(CURDIR)' in *[!A-Za-z0-9/._+-]*) from= ;; *) from='$(CURDIR)' ;; esac; \
	  sed "s|^BUILT_FROM=\"@BUILT_FROM@\"\$$|BUILT_FROM=\"$$from\"|" $< > $@.new
	grep -q '^BUILT_FROM="[^@]*"$$' $@.new || { echo "$@: BUILT_FROM not set" >&2; rm -f $@.new; exit 1; }
	chmod 755 $@.new
	mv -f $@.new $@

$(OBJ)/tests/check_%: tests/unit/check_%.c $(OBJ)/libpostern.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(OBJ)/libpostern.a $(PKG_CHECK) $(PKG_SODIUM) $(PKG_SSL) -lresolv

$(OBJ)/tests/helpers/%: tests/helpers/%.c $(OBJ)/libpostern.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(OBJ)/libpostern.a

# the benchmarks' SMTP load generator (bench/smtp_blast.c)
BLAST = $(OBJ)/bench/smtp_blast
$(BLAST): bench/smtp_blast.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $<

deps:
	@sh scripts/deps.sh

unit: all $(UNIT_BIN)
	@sh tests/run-unit.sh $(UNIT_BIN)

integration: all $(TEST_HELPERS)
	@POSTERN_BIN=$(abspath $(BIN)) POSTERN_TEST_HELPERS=$(abspath $(OBJ)/tests/helpers) \
	  python3 tests/integration/run.py $(T)

# the whole suite: dependencies, build, Check unit tests, integration tests;
# both test stages always run, then one summary (exit 1 if either failed);
# as an ordinary user the summary says how many tests were skipped for want
# of root (run.py's "integration: not root: N" line)
check: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p $(OBJ)
	@{ $(MAKE) --no-print-directory unit; echo $$? > $(OBJ)/check-unit.rc; } 2>&1 | tee $(OBJ)/check-unit.log
	@{ $(MAKE) --no-print-directory integration; echo $$? > $(OBJ)/check-integration.rc; } 2>&1 | tee $(OBJ)/check-integration.log
	@echo "== make check summary =="; \
	 grep '^unit: FAILED' $(OBJ)/check-unit.log; \
	 grep '^unit: [0-9]' $(OBJ)/check-unit.log | tail -1 | grep . || echo "unit: did not finish (see above)"; \
	 grep '^integration: [0-9]' $(OBJ)/check-integration.log | tail -1 | grep . || echo "integration: did not finish (see above)"; \
	 nr=$$(sed -n 's/^integration: not root: \([0-9]*\) .*/\1/p' $(OBJ)/check-integration.log | tail -1); \
	 [ -z "$$nr" ] || echo "integration: not root: $$nr tests need root and were skipped, not run (each listed above under \"skipped:\" with why)"; \
	 if [ "$$(cat $(OBJ)/check-unit.rc)" = 0 ] && [ "$$(cat $(OBJ)/check-integration.rc)" = 0 ]; then \
	   if [ -n "$$nr" ]; then echo "check: OK for what an ordinary user can run; $$nr privilege tests skipped (run make check as root for the whole suite)"; \
	   else echo "check: OK"; fi; \
	 else echo "check: FAILED"; exit 1; fi

# the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer
sanitize: deps
	@$(MAKE) --no-print-directory SAN=1 OBJ=build-san BIN=build-san/bin all
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(MAKE) --no-print-directory SAN=1 OBJ=build-san BIN=build-san/bin unit integration

# the Check unit tests, then the daemons (tests/integration/valgrind_daemons.py),
# under valgrind's memcheck: any memory error or definitely lost block fails
valgrind: deps
	@sh scripts/deps.sh valgrind
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@sh tests/run-valgrind.sh $(UNIT_BIN)
	@POSTERN_BIN=$(abspath $(BIN)) python3 tests/integration/valgrind_daemons.py

# a whole instance through rounds of mixed and hostile traffic, reloads and
# timeouts; after each round the long-lived processes must hold the
# descriptors they held before, with no session, zombie or stray file left
# (tests/integration/soak_daemons.py); SOAK="ROUNDS SCALE", default "4 1"
SOAK ?= 4 1
soak: all
	@POSTERN_BIN=$(abspath $(BIN)) python3 tests/integration/soak_daemons.py $(SOAK)

# set up a throwaway instance with a demo user and run it in the foreground
run: deps
	@$(MAKE) --no-print-directory all
	@sh scripts/run-demo.sh $(abspath $(BIN))

bench-smtp: all
	python3 bench/bench_smtp.py --bin $(abspath $(BIN))

# issue 2's reception workloads (smtp-listener alone) and the disk's commit limit
bench-reception: all $(BLAST)
	python3 bench/bench_reception.py --bin $(abspath $(BIN)) --blast $(abspath $(BLAST))

# one SMTP connection's cost without mail (banner, EHLO, QUIT): CPU per connection
bench-connect: all
	python3 bench/bench_connect.py --bin $(abspath $(BIN))

# queue-inject's commit rate (N parallel injectors, 4 KB messages)
bench-inject: $(BIN)/queue-inject
	python3 bench/bench_inject.py --bin $(abspath $(BIN))

bench-remote: $(BIN)/remote-deliverer
	python3 bench/bench_remote.py --bin $(abspath $(BIN))

# outbound through the whole path: A's SMTP, queue, remote-deliverer -> B (a second postern) or a sink
bench-relay: all
	python3 bench/bench_relay.py --bin $(abspath $(BIN))

# POP3 logins/s (argon2id-bound), RETR throughput, login scan cost
bench-pop3: all
	python3 bench/bench_pop3.py --bin $(abspath $(BIN))

# queue-manager start-up and new-message latency with a large queue
bench-queue-scan: all
	python3 bench/bench_queue_scan.py --bin $(abspath $(BIN))

# end to end: first SMTP connection -> all N messages in Maildir/new (C=10, 2 KiB)
bench-e2e: all $(BLAST)
	python3 bench/bench_e2e.py --bin $(abspath $(BIN)) --blast $(abspath $(BLAST))

# issue 3's reference on this machine: Debian's Postfix, a private instance,
# the same client and workload as bench-e2e (needs apt-get install postfix)
bench-postfix: $(BLAST)
	python3 bench/bench_postfix.py --blast $(abspath $(BLAST))

# what durability costs: bench-e2e on a separate build whose fsync() does
# nothing (bench/nofsync.h; never installed, loses mail on a crash)
bench-e2e-nofsync: $(BLAST)
	@$(MAKE) --no-print-directory OBJ=build-nofsync BIN=build-nofsync/bin \
	  CFLAGS="$(CFLAGS) -include $(abspath bench/nofsync.h)" all
	python3 bench/bench_e2e.py --bin $(abspath build-nofsync/bin) --blast $(abspath $(BLAST)) --no-strace \
	  --note "fsync() does nothing: NOT DURABLE, a measurement of what the fsyncs cost"

# TLS handshakes/s on the smtps port; one TLS SMTP session's throughput
bench-tls: all
	python3 bench/bench_tls.py --bin $(abspath $(BIN))

# `make install PREFIX=/usr/local DESTDIR=`: every program (and postern-setup,
# which copies the programs beside it into ROOT/bin) into $(PREFIX)/lib/postern/bin,
# man pages into $(PREFIX)/share/man, the example conf (conf/) into
# $(PREFIX)/share/postern and the s6 service templates (service/) into
# $(PREFIX)/share/postern/service, where the installed postern-setup looks
# (../../../share/postern/service from its own directory; its BUILT_FROM is
# emptied, so it never reads the build tree).
# The installed queue-inject is a template (it finds ROOT from its own place):
# setuid postern-queue 4711 if that user exists, else 0755; postern-setup
# makes each ROOT/bin/queue-inject 4711.  Nothing else is setuid.
PREFIX  ?= /usr/local
DESTDIR ?=
POSTERN_LIBBIN = $(PREFIX)/lib/postern/bin
MAN5    = $(sort $(wildcard docs/man/*.5))
MAN8    = $(sort $(wildcard docs/man/*.8))
EXAMPLES = $(sort $(wildcard conf/*))
SERVICE_TEMPLATES = service/run service/notification-fd
SERVICE_LOG_TEMPLATES = service/log/run

install: all
	install -d $(DESTDIR)$(POSTERN_LIBBIN) $(DESTDIR)$(PREFIX)/share/man/man5 \
	  $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/postern \
	  $(DESTDIR)$(PREFIX)/share/postern/service/log
	install -m 755 $(filter-out $(BIN)/queue-inject $(BIN)/postern-setup,$(PROGS:%=$(BIN)/%) $(SCRIPTS:%=$(BIN)/%)) $(DESTDIR)$(POSTERN_LIBBIN)
	sed 's|^BUILT_FROM=".*"$$|BUILT_FROM=""|' $(BIN)/postern-setup > $(DESTDIR)$(POSTERN_LIBBIN)/postern-setup
	chmod 755 $(DESTDIR)$(POSTERN_LIBBIN)/postern-setup
	install -m 755 $(BIN)/queue-inject $(DESTDIR)$(POSTERN_LIBBIN)/queue-inject
	@if [ "$$(id -u)" = 0 ] && getent passwd postern-queue >/dev/null && getent group postern-queue >/dev/null; then \
	  echo "chown postern-queue:postern-queue + chmod 4711 $(DESTDIR)$(POSTERN_LIBBIN)/queue-inject"; \
	  chown postern-queue:postern-queue $(DESTDIR)$(POSTERN_LIBBIN)/queue-inject && \
	  chmod 4711 $(DESTDIR)$(POSTERN_LIBBIN)/queue-inject; \
	else echo "install: no user postern-queue (or not root): queue-inject installed 0755; postern-setup makes ROOT/bin/queue-inject setuid"; fi
	install -m 644 $(MAN5) $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 644 $(MAN8) $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 644 $(EXAMPLES) $(DESTDIR)$(PREFIX)/share/postern
	install -m 644 $(SERVICE_TEMPLATES) $(DESTDIR)$(PREFIX)/share/postern/service
	install -m 644 $(SERVICE_LOG_TEMPLATES) $(DESTDIR)$(PREFIX)/share/postern/service/log

uninstall:
	rm -f $(PROGS:%=$(DESTDIR)$(POSTERN_LIBBIN)/%) $(SCRIPTS:%=$(DESTDIR)$(POSTERN_LIBBIN)/%)
	rm -f $(MAN5:docs/man/%=$(DESTDIR)$(PREFIX)/share/man/man5/%) $(MAN8:docs/man/%=$(DESTDIR)$(PREFIX)/share/man/man8/%)
	rm -f $(EXAMPLES:conf/%=$(DESTDIR)$(PREFIX)/share/postern/%)
	rm -f $(SERVICE_TEMPLATES:%=$(DESTDIR)$(PREFIX)/share/postern/%) $(SERVICE_LOG_TEMPLATES:%=$(DESTDIR)$(PREFIX)/share/postern/%)
	-rmdir $(DESTDIR)$(POSTERN_LIBBIN) $(DESTDIR)$(PREFIX)/lib/postern $(DESTDIR)$(PREFIX)/share/postern/service/log \
	  $(DESTDIR)$(PREFIX)/share/postern/service $(DESTDIR)$(PREFIX)/share/postern

clean:
	rm -rf $(OBJ) build-san build-nofsync $(BIN)

.PHONY: all deps unit integration check sanitize valgrind soak run install uninstall bench-smtp bench-connect bench-reception bench-inject bench-remote bench-relay bench-tls bench-pop3 bench-queue-scan bench-e2e bench-e2e-nofsync bench-postfix clean
-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)

# libFuzzer targets (clang): tests/fuzz/fuzz_*.c, each run for FUZZ_TIME seconds
# from its corpus in tests/fuzz/corpus/<target>/
FUZZ_CC   ?= clang
FUZZ_TIME ?= 60
FUZZ_SRC  = $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN  = $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)

# lib/ and queue/ are compiled once (coverage-instrumented); UB aborts like a crash
FUZZ_FLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -fno-sanitize-recover=all -Ilib -Iqueue
FUZZ_OBJ  = $(LIB_SRC:%.c=build-fuzz/obj/%.o)

.PRECIOUS: build-fuzz/obj/%.o
build-fuzz/obj/%.o: %.c $(wildcard lib/*.h queue/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer,address,undefined \
	  -o $@ $< $(FUZZ_OBJ) $(PKG_SODIUM) $(PKG_SSL) -lresolv

fuzz: deps
	@sh scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory $(FUZZ_BIN)
	@sh tests/fuzz/run.sh $(FUZZ_TIME) $(FUZZ_BIN)

.PHONY: fuzz
