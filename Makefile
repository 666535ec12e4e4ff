# guest-agent: build, test and measure.
#
#   make demo    install the guest prerequisites, build the guest, boot the micro-VM,
#                run a container in it, print its output, power off
#   make run     build, start kata-agent on a Unix socket, drive it with agent-ctl
#   make test    formatting, lints, unit and integration tests (run as root for all of them)
#   make vm-test the micro-VM tests (after guest-deps): boot, containers on cgroup v1 and
#                v2, logs and debug console over vsock
#   make bench   static release agent, then the benchmark table (and boot figures when
#                the micro-VM prerequisites are there)
#
# Variables: CARGO (cargo), TARGET (x86_64-unknown-linux-gnu), the static agent's target.

CARGO ?= cargo
TARGET ?= x86_64-unknown-linux-gnu
STATIC_RUSTFLAGS := -C target-feature=+crt-static
AGENT_STATIC := target/$(TARGET)/release/kata-agent

.PHONY: all build agent-static run test lint unit bench readme-methods guest-deps demo vm-test clean

all: build

build:
	$(CARGO) build --locked --bins

# A static, stripped agent: glibc with crt-static, so no extra toolchain is needed.
agent-static:
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build --locked --release --target $(TARGET) -p kata-agent
	@ls -l $(AGENT_STATIC)

run: build
	tests/run-agent.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

test: lint build
	$(CARGO) test --locked --workspace

bench: agent-static
	$(CARGO) build --locked --release -p integration-tests --bin bench
	target/release/bench --agent $(AGENT_STATIC)
	@if command -v qemu-system-x86_64 >/dev/null && command -v vhost-device-vsock >/dev/null; then \
	    $(MAKE) -s -f image.mk boot-bench; \
	else echo "boot figures: skipped (make guest-deps installs QEMU and the vsock backend)"; fi

# QEMU, Debian's cloud kernel, busybox, vhost-device-vsock and virtiofsd.
guest-deps:
	tests/vm/install-deps.sh

demo: guest-deps
	$(MAKE) -f image.mk demo

vm-test: guest-deps
	$(MAKE) -f image.mk vm-test

# Regenerates README.md's method status table from the agent itself.
readme-methods: build
	tests/update-readme-methods.sh

clean:
	$(CARGO) clean
