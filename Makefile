# postern - build, test, run.  `make` builds every program into bin/ and
# installs nothing.  See README.md.
#
# Layout the rules discover:
#   lib/*.c                 -> $(OBJ)/libpostern.a
#   daemons/<prog>/*.c      -> $(BIN)/<prog>     (LIBS_<prog> adds libraries)
#   scripts/<prog>.sh       -> $(BIN)/<prog>     (shell tools, copied)
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
CFLAGS_ALL  = $(CSTD) $(OPT) $(WARN) $(HARDEN) -Ilib $(CFLAGS)
LDFLAGS_ALL = -pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack $(LDSAN) $(LDFLAGS)

PKG_SODIUM = $(shell pkg-config --libs libsodium 2>/dev/null || echo -lsodium)
PKG_SSL    = $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
PKG_CHECK  = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck)

# per-program libraries (queue-inject stays libc-only: DESIGN.md section 7)
LIBS_auth-checker    = $(PKG_SODIUM)
LIBS_postern-user    = $(PKG_SODIUM)
LIBS_pop3-listener   = $(PKG_SODIUM)
LIBS_tls-proxy       = $(PKG_SSL)
LIBS_remote-deliverer = $(PKG_SSL)
LIBS_smtp-listener   = $(PKG_SODIUM)
LIBS_queue-manager   = $(PKG_SODIUM)

LIB_SRC   = $(sort $(wildcard lib/*.c))
LIB_OBJ   = $(LIB_SRC:%.c=$(OBJ)/%.o)
PROGS     = $(sort $(notdir $(wildcard daemons/*)))
SCRIPTS   = $(sort $(basename $(notdir $(wildcard scripts/*.sh))))
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
	$$(CC) $$(LDFLAGS_ALL) -o $$@ $$(filter %.o,$$^) $(OBJ)/libpostern.a $$(LIBS_$(1))
endef
$(foreach p,$(PROGS),$(eval $(call prog_rule,$(p))))

$(BIN)/%: scripts/%.sh
	@mkdir -p $(BIN)
	cp $< $@
	chmod 755 $@

$(OBJ)/tests/check_%: tests/unit/check_%.c $(OBJ)/libpostern.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(OBJ)/libpostern.a $(PKG_CHECK) $(PKG_SODIUM) $(PKG_SSL)

$(OBJ)/tests/helpers/%: tests/helpers/%.c $(OBJ)/libpostern.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(OBJ)/libpostern.a

deps:
	@sh scripts/deps.sh

unit: all $(UNIT_BIN)
	@sh tests/run-unit.sh $(UNIT_BIN)

integration: all $(TEST_HELPERS)
	@POSTERN_BIN=$(abspath $(BIN)) POSTERN_TEST_HELPERS=$(abspath $(OBJ)/tests/helpers) \
	  python3 tests/integration/run.py

# the whole suite: dependencies, build, Check unit tests, integration tests
check: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit integration

# the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer
sanitize: deps
	@$(MAKE) --no-print-directory SAN=1 OBJ=build-san BIN=build-san/bin all
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(MAKE) --no-print-directory SAN=1 OBJ=build-san BIN=build-san/bin unit integration

# set up a throwaway instance with a demo user and run it in the foreground
run: deps
	@$(MAKE) --no-print-directory all
	@sh scripts/run-demo.sh $(abspath $(BIN))

bench-smtp: all
	python3 bench/bench_smtp.py --bin $(abspath $(BIN))

clean:
	rm -rf $(OBJ) build-san $(BIN)

.PHONY: all deps unit integration check sanitize run bench-smtp clean
-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)

# libFuzzer targets (clang): tests/fuzz/fuzz_*.c, each run for FUZZ_TIME seconds
# from its corpus in tests/fuzz/corpus/<target>/
FUZZ_CC   ?= clang
FUZZ_TIME ?= 60
FUZZ_SRC  = $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN  = $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_SRC)
	@mkdir -p build-fuzz
	$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Ilib \
	  -o $@ $< $(LIB_SRC) $(PKG_SODIUM) $(PKG_SSL)

fuzz: deps
	@sh scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory $(FUZZ_BIN)
	@sh tests/fuzz/run.sh $(FUZZ_TIME) $(FUZZ_BIN)

.PHONY: fuzz
