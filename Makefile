# pgpilot: plain GNU make + pkg-config.
#   make            build ./pgpilot
#   make check      install missing packages, unit tests (+ ASan/UBSan), optscan, integration tests
#                   (+ the pooler's integration tests against an ASan/UBSan build)
#   make demo       install missing packages, start a local cluster and print how to connect
#   make bench      pgbench side by side with PgBouncer
#   make fuzz       build and run every libFuzzer target (clang) for FUZZ_SECONDS each
#   make format / format-check
# V=1 shows the full commands.

VERSION := 0.1.0
CC ?= cc
PKGS := libevent openssl libcares libpq libcurl jansson
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
OPT ?= -O2
WARN := -Wall -Wextra -Werror -Wmissing-prototypes -Wshadow -Wno-unused-parameter
CFLAGS := -std=gnu11 -D_GNU_SOURCE $(OPT) -g $(WARN) -I. -DPGPILOT_VERSION='"$(VERSION)"' $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS := $(PKG_LIBS) -lm

ifeq ($(V),1)
Q :=
else
Q := @
endif

SUBSYS := protocol dns ha pooler
# Each subsystem is an archive; a unit test links the archives it needs, so a module being edited in
# one subsystem does not break the tests of another.
src_of = $(filter-out pooler/main.c,$(wildcard $(1)/*.c))
BUILD ?= build
obj_of = $(patsubst %.c,$(BUILD)/%.o,$(call src_of,$(1)))
LIBS_ALL := $(BUILD)/libpooler.a $(BUILD)/libha.a $(BUILD)/libdns.a $(BUILD)/libprotocol.a

.PHONY: all check check-unit check-asan check-opts check-integration check-integration-asan \
	pgpilot-asan demo bench bench-failover \
	bench-faults fuzz deps format format-check clean install

all: pgpilot

pgpilot: $(BUILD)/pooler/main.o $(LIBS_ALL)
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

define subsys_lib
$(BUILD)/lib$(1).a: $(call obj_of,$(1))
	@echo "  AR      $$@"
	$(Q)rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach s,$(SUBSYS),$(eval $(call subsys_lib,$(s))))

# Unit tests: test/unit/test_<subsys>_<module>.c, one binary per module.
UNIT_SRC := $(wildcard test/unit/test_*.c)
UNIT_BIN := $(patsubst test/unit/%.c,$(BUILD)/bin/%,$(UNIT_SRC))
# What a test links, by its name test_<subsys>_<module>: lower subsystems as archives (dependencies
# flow one way); a pooler test links only pooler/<module>.o, pooler/log.o and whatever
# test_pooler_<module>_DEPS lists, so the rest of pooler/ being edited does not block it.
LOWER_LIBS := $(BUILD)/libha.a $(BUILD)/libdns.a $(BUILD)/libprotocol.a
test_pooler_config_DEPS := pooler/ini.o pooler/userlist.o
test_pooler_sbuf_DEPS := pooler/slab.o
pooler_objs = $(sort $(BUILD)/pooler/$(patsubst test_pooler_%,%,$(1)).o $(BUILD)/pooler/log.o \
	$(addprefix $(BUILD)/,$($(1)_DEPS)))
libs_for = $(if $(findstring test_pooler_,$(1)),$(call pooler_objs,$(1)) $(LOWER_LIBS),\
	$(if $(findstring test_ha_,$(1)),$(LOWER_LIBS),\
	$(if $(findstring test_dns_,$(1)),$(BUILD)/libdns.a $(BUILD)/libprotocol.a,$(BUILD)/libprotocol.a)))

# (only the archives it needs are prerequisites, so a broken module elsewhere does not block it)
.SECONDEXPANSION:
$(BUILD)/bin/%: $(BUILD)/test/unit/%.o $$(call libs_for,$$*)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(call libs_for,$*) $(LDLIBS) -lcmocka

unit: $(UNIT_BIN)

check-unit: deps $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; (cd test/unit && ../../$$t); done

# The same unit tests under AddressSanitizer + UndefinedBehaviorSanitizer, in their own build tree.
ASAN_CFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
check-asan: deps
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 EXTRA_CFLAGS="$(ASAN_CFLAGS)" \
		check-unit

# The daemon under ASan + UBSan: build-asan/pgpilot-asan (the release ./pgpilot is untouched).
$(BUILD)/pgpilot-asan: $(BUILD)/pooler/main.o $(LIBS_ALL)
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

pgpilot-asan: deps
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 EXTRA_CFLAGS="$(ASAN_CFLAGS)" \
		build-asan/pgpilot-asan

# The pooler integration tests (not the HA, etcd and DNS ones: ASAN_IT_TESTS overrides) against
# pgpilot-asan. A sanitizer report ends the daemon (halt_on_error, no recovery) and the test
# fixture fails any test whose pooler log holds one. Leak checking is off: the daemon exits
# through signals with its pools still allocated.
ASAN_IT_TESTS ?= $(filter-out test_ha_% test_dns_named.py test_etcd_client.py,\
	$(notdir $(wildcard test/integration/test_*.py)))
check-integration-asan: pgpilot-asan
	$(Q)cd test/integration && PGPILOT_BIN=$(CURDIR)/build-asan/pgpilot-asan PGPILOT_SANITIZED=1 \
		ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:quarantine_size_mb=16:print_legend=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		/usr/bin/python3 -m pytest -n 2 -q -p no:cacheprovider --timeout=300 $(ASAN_IT_TESTS)

check-opts: pgpilot
	$(Q)test/optscan.sh

check-integration: deps pgpilot
	$(Q)cd test/integration && /usr/bin/python3 -m pytest -n 2 -q -p no:cacheprovider --timeout=300 .

check: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory check-unit
	$(Q)$(MAKE) --no-print-directory check-asan
	$(Q)$(MAKE) --no-print-directory check-opts
	$(Q)$(MAKE) --no-print-directory check-integration
	$(Q)$(MAKE) --no-print-directory check-integration-asan

demo: deps pgpilot
	$(Q)/usr/bin/python3 test/demo.py

bench: deps pgpilot
	$(Q)/usr/bin/python3 bench/bench.py

bench-failover: deps pgpilot
	$(Q)/usr/bin/python3 bench/failover.py

bench-faults: deps pgpilot
	$(Q)/usr/bin/python3 bench/faults.py $(FAULTS_ARGS)

fuzz: deps
	$(Q)$(MAKE) --no-print-directory -C test/fuzz run

# What a fresh Debian 12 machine lacks: installed here, before anything builds.
DEB_PKGS := build-essential pkg-config libevent-dev libssl-dev libc-ares-dev libpq-dev \
	libcurl4-openssl-dev libjansson-dev libcmocka-dev postgresql-15 postgresql-client-15 \
	pgbouncer etcd-server etcd-client bind9 bind9-utils bind9-dnsutils python3 python3-pytest \
	python3-psycopg python3-pytest-xdist python3-pytest-timeout clang libclang-rt-14-dev iproute2 \
	patroni
deps:
	$(Q)missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing missing packages: $$missing"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

format:
	clang-format -i $(wildcard */*.c */*.h test/unit/*.c)

format-check:
	clang-format --dry-run --Werror $(wildcard */*.c */*.h test/unit/*.c)

install: pgpilot
	install -D -m 0755 pgpilot $(DESTDIR)/usr/local/bin/pgpilot

clean:
	rm -rf build build-asan pgpilot

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
