# guest-agent: build, test and measure.
#
#   make demo    install the guest prerequisites, build the guest, boot the micro-VM,
#                run a container in it, print its output, power off
#   make run     build, start kata-agent on a Unix socket, drive it with agent-ctl
#   make test    formatting, lints, unit and integration tests (as root, after
#                `make test-deps`; with CI set, a test that would skip fails instead)
#   make test-deps  install the Debian packages the tests need (tests/test-deps.sh)
#   make install put release builds of kata-agent and agent-ctl into $(PREFIX)/bin
#   make vm-test the micro-VM tests (after guest-deps): boot, a virtio console only,
#                containers on cgroup v1 and v2, pods through both shims' requests,
#                logs and debug console over vsock, hot-plugged devices through QMP
#   make bench   static release agent, then the benchmark table, side by side with
#                $(UPSTREAM_AGENT) when it exists (and boot figures when the micro-VM
#                prerequisites are there); BENCH_ARGS="--rounds 3" for more A B B A rounds
#   make dist    the guest as Kata's static tarball lays it out (our kernel, image,
#                initrd, a static agent-ctl) in build/dist, with SHA-256 sums
#   make fuzz-smoke  every fuzz target (fuzz/) for FUZZ_SECONDS (30) each, as root;
#                fails on a crash. `fuzz/run.sh <target> [libFuzzer args]` runs one longer
#
# Variables: CARGO (cargo), TARGET (x86_64-unknown-linux-gnu), the static agent's target;
# AGENT_FEATURES, cargo's feature flags for the static agent (empty: the default
# features; --no-default-features leaves out the policy engine, agent-policy);
# PREFIX (/usr/local) and DESTDIR for install; UPSTREAM_AGENT and BENCH_ARGS for bench.

CARGO ?= cargo
TARGET ?= x86_64-unknown-linux-gnu
STATIC_RUSTFLAGS := -C target-feature=+crt-static
AGENT_STATIC := target/$(TARGET)/release/kata-agent
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
# Upstream's agent, measured beside ours by `make bench` when it is there.
UPSTREAM_AGENT ?= ../shared/upstream/kata-agent
AGENT_FEATURES ?=

.PHONY: all build agent-static agent-ctl-static run test test-deps lint unit bench readme-methods \
	guest-deps demo vm-test dist install clean fuzz-build fuzz-smoke

all: build

build:
	$(CARGO) build --locked --bins

# A static, stripped agent: glibc with crt-static, so no extra toolchain is needed.
agent-static:
	@echo "agent-static: release build with LTO (a few minutes the first time) ..."
	@start=$$(date +%s); \
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build --locked --release --target $(TARGET) -p kata-agent \
	    $(AGENT_FEATURES) || exit 1; \
	echo "agent-static: done in $$(( $$(date +%s) - start )) s"
	@ls -l $(AGENT_STATIC)

# agent-ctl the same way, for hosts without our toolchain's glibc (the dist tarball).
agent-ctl-static:
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build --locked --release --target $(TARGET) -p agent-ctl
	@ls -l target/$(TARGET)/release/agent-ctl

run: build
	tests/run-agent.sh

# libFuzzer (libfuzzer-sys) on the stable toolchain: SanitizerCoverage's
# LLVM pass and flags, no sanitizer. fuzz/ is a workspace of its own; the
# target triple keeps the flags off build scripts and proc macros.
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing

fuzz-build:
	RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) build --locked --release --manifest-path fuzz/Cargo.toml \
	    --target $(TARGET) --bins

fuzz-smoke: fuzz-build
	fuzz/smoke.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	@# The agent without its policy engine (cargo feature agent-policy off).
	$(CARGO) clippy --locked -p kata-agent --no-default-features --all-targets -- -D warnings
	@# fuzz/ is a workspace of its own that builds the agent: its lock file must
	@# follow the agent's dependencies (checked without building anything).
	$(CARGO) metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

test: lint build
	$(CARGO) test --locked --workspace --no-fail-fast
	$(CARGO) test --locked -p kata-agent --no-default-features --lib policy::

test-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $$(tests/test-deps.sh)

install:
	$(CARGO) build --locked --release -p kata-agent -p agent-ctl
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 target/release/kata-agent target/release/agent-ctl $(DESTDIR)$(BINDIR)/

bench: agent-static
	$(CARGO) build --locked --release -p integration-tests --bin bench
	target/release/bench --agent $(AGENT_STATIC) \
	    $$(test -x $(UPSTREAM_AGENT) && echo --upstream $(UPSTREAM_AGENT)) $(BENCH_ARGS)
	@if command -v qemu-system-x86_64 >/dev/null && command -v vhost-device-vsock >/dev/null; then \
	    $(MAKE) -s -f image.mk boot-bench; \
	else echo "boot figures: skipped (make guest-deps installs QEMU and the vsock backend)"; fi

# QEMU, busybox, vhost-device-vsock and virtiofsd; Debian's cloud kernel
# unpacked into build/debian-kernel (not installed).
guest-deps:
	tests/vm/install-deps.sh

demo: guest-deps
	$(MAKE) -f image.mk demo

vm-test: guest-deps
	$(MAKE) -f image.mk vm-test

dist:
	$(MAKE) -f image.mk dist

# Regenerates README.md's method status table from the agent itself.
readme-methods: build
	tests/update-readme-methods.sh

clean:
	$(CARGO) clean
