# guest-agent: the guest image, the guest kernel and the micro-VM test.
#
#   make -f image.mk kernel    build bzImage + vmlinux from kernel-config/ into $(KERNEL_OUT)
#   make -f image.mk kernel-config  only merge and check the config (a minute, no compile)
#   make -f image.mk kernel-if-changed  the same as kernel, but nothing is done when $(KERNEL_OUT)
#                              holds a kernel built from the same script, fragments, source
#                              tarball and compiler (for CI, with or without a cached build/)
#   make -f image.mk rootfs    static agent, then the root filesystem directory $(ROOTFS_DIR)
#   make -f image.mk initrd    the rootfs as a compressed cpio initrd, $(INITRD)
#   make -f image.mk image     the rootfs as an $(IMAGE_FORMAT) disk image, $(IMAGE)
#   make -f image.mk reproducible  build initrd and images twice each, compare byte for byte
#   make -f image.mk dist-reproducible  the same for dist's rootfs, and the tarball packed twice
#   make -f image.mk vm-test   boot $(KERNEL) + $(INITRD) under QEMU, drive the agent over vsock:
#                              Check/Version, then vm-test-console, -containers, -pod, -observe,
#                              -devices, -oom-score
#   make -f image.mk vm-test-console  the console as Kata's runtime gives it: only a virtio
#                              console (hvc0), panic=1: the agent comes up, its logs on hvc0
#   make -f image.mk vm-test-containers  the shim's container sequence in the VM, guest
#                              cgroups v1 and v2: limits, exec, OOM event, power off
#   make -f image.mk vm-test-pod  an nginx-like pod on cgroup v2, as the Go runtime and as
#                              runtime-rs send it: the pod network on a virtio-net NIC, a
#                              ConfigMap, an emptyDir an init container fills, a web server,
#                              exec probes, kubectl exec, the host fetching the page
#   make -f image.mk vm-test-observe  logs over vsock (agent.log_vport) and the debug
#                              console (a shell over vsock, then on the serial console),
#                              with $(DEBUG_INITRD)
#   make -f image.mk vm-test-devices  devices hot-plugged into the running guest over QMP,
#                              then the shim's request for each: a virtio-blk volume, a
#                              container rootfs on a disk, a SCSI disk, an NVDIMM (pmem), a
#                              9p share (WITH_9P=1), a NIC (UpdateInterface), ResizeVolume,
#                              AddSwap, a disk that never comes (agent.hotplug_timeout)
#   make -f image.mk vm-test-oom-score  the agent as PID 1 at oom_score_adj -997, a container at 0
#   make -f image.mk initrd-debug  the initrd with busybox (a shell for the debug console)
#   make -f image.mk kernel-fast  the fast path's kernel (kernel-config/fast.conf alone):
#                              vmlinux for QEMU's microvm, into $(KERNEL_FAST_OUT)
#   make -f image.mk kernel-fast-if-changed  the same, nothing done when its inputs are
#                              those of the kernel already there (as kernel-if-changed)
#   make -f image.mk initrd-fast  the module-less initrd, $(FAST_COMPRESS)-compressed: the
#                              fast path's, $(FAST_INITRD)
#   make -f image.mk boot-bench  boot and memory figures, $(BOOT_RUNS) boots each: Debian's
#                              kernel on q35 with $(INITRD) (the reference) and the fast path
#                              (kernel-fast's vmlinux on microvm with $(FAST_INITRD))
#   make -f image.mk boot-loop  $(LOOP_RUNS) boots in a row of each path, each answering
#                              Check and running a container (not in CI: on 2 loaded cores
#                              about 12 min for the fast path, 35 min for q35)
#   make -f image.mk initrd-bare   the initrd without kernel modules (for our kernel)
#   make -f image.mk demo      build, boot the fast path, run `echo hello from the guest;
#                              uname -a` in a container, print its output, power off
#   make -f image.mk disk      Kata's guest image: the module-less rootfs as ext4 in
#                              partition 1 of a raw disk with an NVDIMM PFN info block
#                              (fsdax), $(DISK)
#   make -f image.mk dist      our kernel, $(DISK), $(BARE_INITRD) and a static agent-ctl
#                              packed as Kata's static tarball lays out its guest, in
#                              $(DIST_DIR), with SHA-256 sums
#   make -f image.mk vm-test-kata-boot  the dist tarball booted with Kata's runtime's own
#                              QEMU command line (image on an NVDIMM with DAX, then the
#                              initrd): a container over virtio-fs, the root's mount, logs
#                              on hvc0
#
# Variables (defaults in brackets; each is also read by the script it is passed to):
#   BUILD_DIR          where everything is written [build]
#   KERNEL             guest kernel for vm-test [$(DEBIAN_KERNEL_DIR)/vmlinuz: Debian's cloud
#                      kernel, downloaded and unpacked there, never installed on the host];
#                      KERNEL=build/kernel/bzImage boots ours (after `make -f image.mk kernel`)
#   DEBIAN_KERNEL_DIR  where rootfs-builder/debian-kernel.sh unpacks Debian's kernel
#                      [$(BUILD_DIR)/debian-kernel]
#   MODULES_KVER       kernel release whose modules go into the rootfs; that of Debian's
#                      kernel for the default KERNEL, derived from a /boot/vmlinuz-<release>
#                      KERNEL, empty (none) for any other kernel
#   MODULES_ROOT       where that release's modules are [$(DEBIAN_KERNEL_DIR)/lib/modules;
#                      /lib/modules for a /boot kernel]
#   MODULES            modules to carry, see rootfs-builder/rootfs.sh [virtio, vsock, fuse,
#                      virtiofs, and the drivers of hot-plugged disks, SCSI, NVDIMMs, 9p]
#   WITH_BUSYBOX       1 adds busybox (for the debug console) [0]
#   COMPRESS           initrd compression: zstd, gzip or none [zstd]
#   IMAGE_FORMAT       ext4 or erofs [ext4]
#   SOURCE_DATE_EPOCH  timestamp of every file in the initrd and image [0]
#   KERNEL_SRC         kernel source tarball [/usr/src/linux-source-6.1.tar.xz]
#   KERNEL_OUT         kernel build directory [$(BUILD_DIR)/kernel]
#   KERNEL_APPEND      extra guest kernel parameters for vm-test, e.g. cgroup_no_v1=all []
#   WITH_9P            1: vm-test-devices also tests a 9p share; needs a kernel with 9p
#                      (KERNEL=$(KERNEL_OUT)/bzImage; Debian's cloud kernel has none) [0]
#   KERNEL_FAST_OUT    the fast path's kernel build directory [$(BUILD_DIR)/kernel-fast]
#   FAST_COMPRESS      the fast path's initrd compression, chosen by measurement [none]
#   BOOT_RUNS          boots per path in boot-bench [10]
#   LOOP_RUNS          boots per path in boot-loop [100]
#   DIST_DIR           where dist puts the tarball [$(BUILD_DIR)/dist]
#   SOURCE_DATE_EPOCH  also the timestamp of every entry of the dist tarball
#   CARGO (cargo), TARGET (x86_64-unknown-linux-gnu): as in the Makefile

CARGO ?= cargo
TARGET ?= x86_64-unknown-linux-gnu
BUILD_DIR ?= build
DEBIAN_KERNEL_DIR ?= $(BUILD_DIR)/debian-kernel
DEBIAN_KERNEL := $(DEBIAN_KERNEL_DIR)/vmlinuz
# Debian's kernel is fetched only when it is the one to boot.
ifeq ($(origin KERNEL),undefined)
KERNEL = $(DEBIAN_KERNEL)
KERNEL_DEP := debian-kernel
endif
ifneq ($(filter /boot/vmlinuz-%,$(KERNEL)),)
MODULES_KVER ?= $(patsubst /boot/vmlinuz-%,%,$(KERNEL))
MODULES_ROOT ?= /lib/modules
else
MODULES_KVER ?= $(if $(filter $(DEBIAN_KERNEL),$(KERNEL)),$(shell cat $(DEBIAN_KERNEL_DIR)/release 2>/dev/null))
MODULES_ROOT ?= $(DEBIAN_KERNEL_DIR)/lib/modules
endif
WITH_BUSYBOX ?= 0
COMPRESS ?= zstd
IMAGE_FORMAT ?= ext4
SOURCE_DATE_EPOCH ?= 0
KERNEL_SRC ?= /usr/src/linux-source-6.1.tar.xz
KERNEL_OUT ?= $(BUILD_DIR)/kernel
KERNEL_APPEND ?=
WITH_9P ?= 0
KERNEL_FAST_OUT ?= $(BUILD_DIR)/kernel-fast
FAST_COMPRESS ?= none
BOOT_RUNS ?= 10
LOOP_RUNS ?= 100

AGENT := target/$(TARGET)/release/kata-agent
AGENT_CTL := target/debug/agent-ctl
ROOTFS_DIR := $(BUILD_DIR)/rootfs
INITRD := $(BUILD_DIR)/kata-initrd.img
DEBUG_ROOTFS_DIR := $(BUILD_DIR)/rootfs-debug
DEBUG_INITRD := $(BUILD_DIR)/kata-initrd-debug.img
BARE_ROOTFS_DIR := $(BUILD_DIR)/rootfs-bare
BARE_INITRD := $(BUILD_DIR)/kata-initrd-bare.img
FAST_INITRD := $(BUILD_DIR)/kata-initrd-fast.img
FAST_KERNEL := $(KERNEL_FAST_OUT)/vmlinux
IMAGE := $(BUILD_DIR)/kata-rootfs.$(IMAGE_FORMAT)
BARE_IMAGE := $(BUILD_DIR)/kata-rootfs-bare.ext4
DISK := $(BUILD_DIR)/kata-containers.img
DIST_DIR ?= $(BUILD_DIR)/dist
AGENT_CTL_STATIC := target/$(TARGET)/release/agent-ctl
DIST_VERSION := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
DIST_TARBALL := $(DIST_DIR)/guest-agent-static-$(DIST_VERSION)-x86_64.tar.xz

export SOURCE_DATE_EPOCH

.PHONY: debian-kernel kernel kernel-config kernel-if-changed agent rootfs initrd image reproducible \
	agent-ctl vm-test vm-test-boot vm-test-console vm-test-containers vm-test-pod vm-test-observe \
	vm-test-devices initrd-debug initrd-bare boot-bench demo rootfs-bare disk dist dist-reproducible \
	agent-ctl-static vm-test-kata-boot vm-test-oom-score kernel-fast kernel-fast-if-changed initrd-fast boot-loop

# Debian's cloud kernel and its modules, unpacked into $(DEBIAN_KERNEL_DIR).
debian-kernel:
	OUT_DIR=$(DEBIAN_KERNEL_DIR) rootfs-builder/debian-kernel.sh

kernel:
	KERNEL_SRC=$(KERNEL_SRC) OUT_DIR=$(KERNEL_OUT) kernel-config/build-kernel.sh

kernel-config:
	KERNEL_SRC=$(KERNEL_SRC) OUT_DIR=$(KERNEL_OUT) CONFIG_ONLY=1 kernel-config/build-kernel.sh

kernel-if-changed:
	KERNEL_SRC=$(KERNEL_SRC) OUT_DIR=$(KERNEL_OUT) IF_CHANGED=1 kernel-config/build-kernel.sh

# The fast path's kernel: fast.conf alone (no PCI, virtio-mmio), booted as vmlinux.
kernel-fast:
	KERNEL_SRC=$(KERNEL_SRC) OUT_DIR=$(KERNEL_FAST_OUT) FRAGMENTS=fast kernel-config/build-kernel.sh

kernel-fast-if-changed:
	KERNEL_SRC=$(KERNEL_SRC) OUT_DIR=$(KERNEL_FAST_OUT) FRAGMENTS=fast IF_CHANGED=1 kernel-config/build-kernel.sh

agent:
	$(MAKE) agent-static CARGO=$(CARGO) TARGET=$(TARGET)

rootfs: agent $(KERNEL_DEP)
	AGENT=$(AGENT) ROOTFS_DIR=$(ROOTFS_DIR) WITH_BUSYBOX=$(WITH_BUSYBOX) \
	MODULES_KVER=$(MODULES_KVER) MODULES_ROOT=$(MODULES_ROOT) $(if $(MODULES),MODULES="$(MODULES)") \
	rootfs-builder/rootfs.sh

initrd: rootfs
	ROOTFS_DIR=$(ROOTFS_DIR) INITRD=$(INITRD) COMPRESS=$(COMPRESS) rootfs-builder/initrd.sh

image: rootfs
	ROOTFS_DIR=$(ROOTFS_DIR) IMAGE=$(IMAGE) IMAGE_FORMAT=$(IMAGE_FORMAT) rootfs-builder/image.sh

# The same with busybox, whatever WITH_BUSYBOX says: the debug console's shell.
initrd-debug: agent $(KERNEL_DEP)
	AGENT=$(AGENT) ROOTFS_DIR=$(DEBUG_ROOTFS_DIR) WITH_BUSYBOX=1 \
	MODULES_KVER=$(MODULES_KVER) MODULES_ROOT=$(MODULES_ROOT) $(if $(MODULES),MODULES="$(MODULES)") \
	rootfs-builder/rootfs.sh
	ROOTFS_DIR=$(DEBUG_ROOTFS_DIR) INITRD=$(DEBUG_INITRD) COMPRESS=$(COMPRESS) rootfs-builder/initrd.sh

# Without modules: what a kernel built from kernel-config/ boots.
rootfs-bare: agent
	AGENT=$(AGENT) ROOTFS_DIR=$(BARE_ROOTFS_DIR) WITH_BUSYBOX=0 MODULES_KVER= \
	rootfs-builder/rootfs.sh

initrd-bare: rootfs-bare
	ROOTFS_DIR=$(BARE_ROOTFS_DIR) INITRD=$(BARE_INITRD) COMPRESS=$(COMPRESS) rootfs-builder/initrd.sh

# The same files for the fast path, compressed as measured fastest to boot.
initrd-fast: rootfs-bare
	ROOTFS_DIR=$(BARE_ROOTFS_DIR) INITRD=$(FAST_INITRD) COMPRESS=$(FAST_COMPRESS) rootfs-builder/initrd.sh

# Kata's image format: what its runtime maps as an NVDIMM (root=/dev/pmem0p1).
disk: rootfs-bare
	ROOTFS_DIR=$(BARE_ROOTFS_DIR) IMAGE=$(BARE_IMAGE) IMAGE_FORMAT=ext4 rootfs-builder/image.sh
	FS_IMAGE=$(BARE_IMAGE) DISK=$(DISK) rootfs-builder/disk.sh

agent-ctl-static:
	$(MAKE) agent-ctl-static CARGO=$(CARGO) TARGET=$(TARGET)

DIST_ENV = VMLINUX=$(KERNEL_OUT)/vmlinux BZIMAGE=$(KERNEL_OUT)/bzImage DISK=$(DISK) INITRD=$(BARE_INITRD) \
	AGENT_CTL=$(AGENT_CTL_STATIC) VERSION=$(DIST_VERSION)

dist: kernel-if-changed initrd-bare disk agent-ctl-static
	$(DIST_ENV) DIST_DIR=$(DIST_DIR) rootfs-builder/dist.sh

reproducible: rootfs
	ROOTFS_DIR=$(ROOTFS_DIR) rootfs-builder/check-reproducible.sh

# The same, and the dist tarball packed twice from dist's inputs.
dist-reproducible: dist
	ROOTFS_DIR=$(BARE_ROOTFS_DIR) DIST=1 $(DIST_ENV) rootfs-builder/check-reproducible.sh

agent-ctl:
	$(CARGO) build --locked -p agent-ctl

VM_ENV = KERNEL=$(KERNEL) INITRD=$(INITRD) AGENT_CTL=$(AGENT_CTL) KERNEL_APPEND="$(KERNEL_APPEND)"

vm-test: vm-test-boot vm-test-console vm-test-containers vm-test-pod vm-test-observe vm-test-devices \
	vm-test-oom-score

vm-test-boot: initrd agent-ctl
	$(VM_ENV) tests/vm/run.sh

vm-test-console: initrd agent-ctl
	$(VM_ENV) tests/vm/console.sh

vm-test-containers: initrd agent-ctl
	$(VM_ENV) tests/vm/containers.sh

vm-test-pod: initrd agent-ctl
	$(VM_ENV) POD_SHIM=go tests/vm/pod.sh
	$(VM_ENV) POD_SHIM=runtime-rs tests/vm/pod.sh

# Needs `make dist` first (it builds the kernel: minutes); the test unpacks the tarball.
vm-test-kata-boot: agent-ctl
	DIST_TARBALL=$(DIST_TARBALL) AGENT_CTL=$(AGENT_CTL) tests/vm/kata-boot.sh

vm-test-observe: initrd-debug agent-ctl
	$(VM_ENV) INITRD=$(DEBUG_INITRD) tests/vm/observe.sh

vm-test-devices: initrd agent-ctl
	$(VM_ENV) WITH_9P=$(WITH_9P) tests/vm/devices.sh

vm-test-oom-score: initrd agent-ctl
	$(VM_ENV) tests/vm/oom-score.sh

FAST_ENV = DEBIAN_KERNEL=$(KERNEL) DEBIAN_INITRD=$(INITRD) FAST_KERNEL=$(FAST_KERNEL) \
	FAST_INITRD=$(FAST_INITRD) AGENT_CTL=$(AGENT_CTL)

boot-bench: initrd initrd-fast kernel-fast-if-changed agent-ctl
	@$(FAST_ENV) BOOT_RUNS=$(BOOT_RUNS) tests/vm/boot-bench.sh 2>$(BUILD_DIR)/boot-bench.log || \
	{ cat $(BUILD_DIR)/boot-bench.log >&2; exit 1; }

boot-loop: initrd initrd-fast kernel-fast-if-changed agent-ctl
	$(FAST_ENV) LOOP_RUNS=$(LOOP_RUNS) tests/vm/boot-loop.sh

# The fast path: kernel-fast's vmlinux on microvm with the fast initrd.
demo: initrd-fast kernel-fast-if-changed agent-ctl
	@KERNEL=$(FAST_KERNEL) INITRD=$(FAST_INITRD) AGENT_CTL=$(AGENT_CTL) KERNEL_APPEND="$(KERNEL_APPEND)" \
	VM_MACHINE=fast tests/vm/demo.sh
