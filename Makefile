# guest-agent: build, test and measure.
#
#   make run     build, start kata-agent on a Unix socket, drive it with agent-ctl
#   make test    formatting, lints, unit and integration tests (run as root for all of them)
#   make bench   static release agent, then the benchmark table
#
# Variables: CARGO (cargo), TARGET (x86_64-unknown-linux-gnu), the static agent's target.

CARGO ?= cargo
TARGET ?= x86_64-unknown-linux-gnu
STATIC_RUSTFLAGS := -C target-feature=+crt-static
AGENT_STATIC := target/$(TARGET)/release/kata-agent

.PHONY: all build agent-static run test lint unit bench readme-methods clean

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

# Regenerates README.md's method status table from the agent itself.
readme-methods: build
	tests/update-readme-methods.sh

clean:
	$(CARGO) clean
