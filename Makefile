# ferry: build, test, demo, install.
#   make          install missing Debian packages, build release (Swift runtime and Foundation linked in)
#   make test     the whole test suite (real binary, files, loop devices, sshd on 127.0.0.1)
#   make fuzz     the frame parser fuzzer alone, 5M inputs from a fresh seed (FERRY_FUZZ_SEED to pick one)
#   make demo     copy a generated image with progress, show the ledger, damage a byte, verify
#   make bench    medians of 3 interleaved rounds next to sha256sum, openssl, cp, dd, the seed's pipeline, rsync
#   make deb      dist/ferry_VERSION_ARCH.deb for a Debian or Proxmox host without Swift, checked by lintian
#   make install PREFIX=/usr/local   binary, man pages, shell completions, doc (DESTDIR is honoured)

PREFIX ?= /usr/local
SWIFT ?= swift
BIN := .build/release/ferry
# The release binary carries the Swift runtime and Foundation, so a host without a Swift
# toolchain (a Proxmox node) runs it, and FERRY_COMMIT names the commit in `ferry --version`.
# -Xcc reaches every Swift compile as well, so a new commit rebuilds all modules. Nothing is
# loaded from beside the binary, so it gets no $ORIGIN run path; -z now as Debian's hardening asks.
FERRY_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
RELEASE_FLAGS := -c release --static-swift-stdlib --disable-local-rpath -Xlinker -z -Xlinker now \
	-Xcc -DFERRY_COMMIT='"$(FERRY_COMMIT)"'
BUILD_PACKAGES := libssl-dev libzstd-dev libsqlite3-dev libnbd-dev pkg-config
DEB_PACKAGES := dpkg-dev lintian
TEST_PACKAGES := $(DEB_PACKAGES) openssh-server openssh-client util-linux coreutils pv rsync python3 sqlite3 e2fsprogs bc libfuse2 python3-fusepy zfs-fuse qemu-utils libnbd-bin

.PHONY: all build deps deb-deps test-deps test fuzz deb demo bench bench-rescue bench-containers install man clean

all: build

# Installs only what is missing, so a prepared machine never touches the network.
define apt_missing
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps:
	$(call apt_missing,$(BUILD_PACKAGES))

deb-deps: deps
	$(call apt_missing,$(DEB_PACKAGES))

test-deps: deps
	$(call apt_missing,$(TEST_PACKAGES))

build: deps
	$(SWIFT) build $(RELEASE_FLAGS)

# XCTest cannot be linked with a static Swift runtime, so the test bundle is built the usual
# way, in a scratch path of its own: sharing .build would rebuild every module twice per run. The
# tests run the static binary from `build`.
test: test-deps build
	FERRY_BIN=$(CURDIR)/$(BIN) $(SWIFT) test -c release --scratch-path .build/tests --disable-swift-testing 2>&1 | tee .build/test.log
	@sh scripts/test-summary.sh .build/test.log

# `make test` fuzzes from a fixed seed; this runs far more inputs from a new seed each time,
# printed so a failure can be replayed: FERRY_FUZZ_REPLAY=<seed>:<iteration> keeps that input as
# Tests/Fixtures/frames/crash-<seed>-<iteration>.hex and runs it alone.
FERRY_FUZZ_ITERATIONS ?= 5000000
fuzz: deps
	FERRY_FUZZ_ITERATIONS=$(FERRY_FUZZ_ITERATIONS) FERRY_FUZZ_SEED=$${FERRY_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
	$(SWIFT) test -c release --scratch-path .build/tests --disable-swift-testing --filter UnitTests.FrameFuzzTests

demo: build
	@sh scripts/demo.sh $(CURDIR)/$(BIN)

bench: test-deps build
	@sh bench/run.sh $(CURDIR)/$(BIN)

# A rescue copy over a FUSE disk with a bad stretch of 100 bytes, 1 MiB and 64 MiB: time, failed
# reads, and the recorded ranges against the truly bad bytes (needs root for FUSE).
bench-rescue: test-deps build
	@sh bench/rescue.sh $(CURDIR)/$(BIN)

# A sparse VDI (16 GiB virtual, 1.5 GiB of data): ferry copy of the VDI locally and over ssh next
# to the seed pipeline fed by nbdcopy and nbdcopy alone; medians of 3 interleaved rounds, bytes
# read against allocated, peak RSS, the cost of hashing the unallocated zeros.
bench-containers: test-deps build
	@sh bench/containers.sh $(CURDIR)/$(BIN)

# The plugin builds ferry its own way: in a scratch path of its own, so the static release
# binary in .build/release is left as `make build` made it.
man:
	mkdir -p man/generated
	$(SWIFT) package --scratch-path .build/man --allow-writing-to-package-directory generate-manual --multi-page --output-directory man/generated
	sh scripts/man-install-names.sh man/generated man

deb: deb-deps build
	@deb=$$(sh scripts/build-deb.sh $(BIN) dist) && echo "$$deb" && lintian "$$deb"

install: build
	sh scripts/install-files.sh $(BIN) "$(DESTDIR)" $(PREFIX)

clean:
	rm -rf .build dist
