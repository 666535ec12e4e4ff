//! The device cgroup: which device nodes a container may open or create.
//!
//! Kata's shims strip `linux.resources.devices` from the spec, so without a
//! default every container could open every guest device. The rules a
//! container gets are [`container_rules`]: the spec's own rules, then the
//! usual allow-list (the one runc applies: `null`, `zero`, `full`, `random`,
//! `urandom`, `tty`, `console`, `ptmx`, `/dev/pts/*`, and `mknod` of any
//! node), then the devices the spec lists in `linux.devices`. Later rules
//! override earlier ones, as in the kernel's v1 `devices.allow` and
//! `devices.deny` files.
//!
//! On cgroup v1 the rules go through `cgroups-rs` into those files. Cgroup
//! v2 has no device controller: the kernel asks an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the cgroup. [`DeviceFilter`]
//! compiles the rules into such a program (a dozen instructions a rule,
//! no maps, no helpers), loads it and attaches it, replacing the one
//! attached before.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

/// `(type, major, minor, access)` of the devices every container may use;
/// `-1` is any number.
const DEFAULT_ALLOWED: &[(LinuxDeviceType, i64, i64, &str)] = &[
    // mknod of any node: opening it is what the rules below decide.
    (LinuxDeviceType::C, -1, -1, "m"),
    (LinuxDeviceType::B, -1, -1, "m"),
    (LinuxDeviceType::C, 1, 3, "rwm"),    // /dev/null
    (LinuxDeviceType::C, 1, 5, "rwm"),    // /dev/zero
    (LinuxDeviceType::C, 1, 7, "rwm"),    // /dev/full
    (LinuxDeviceType::C, 1, 8, "rwm"),    // /dev/random
    (LinuxDeviceType::C, 1, 9, "rwm"),    // /dev/urandom
    (LinuxDeviceType::C, 5, 0, "rwm"),    // /dev/tty
    (LinuxDeviceType::C, 5, 1, "rwm"),    // /dev/console
    (LinuxDeviceType::C, 5, 2, "rwm"),    // /dev/ptmx
    (LinuxDeviceType::C, 136, -1, "rwm"), // /dev/pts/*
];

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: i64,
    minor: i64,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access.to_string());
    if major >= 0 {
        b = b.major(major);
    }
    if minor >= 0 {
        b = b.minor(minor);
    }
    // Every field is set: the builder cannot fail.
    b.build().unwrap_or_default()
}

/// The device rules of a container: a deny-all, `spec_rules`, the default
/// allow-list, then `rwm` for each device of `linux.devices`. The deny-all
/// makes a set of rules mean the same on v1, whose `devices.allow` writes
/// add to what is there, as on v2, whose program replaces the former one.
pub fn container_rules(
    spec_rules: &[LinuxDeviceCgroup],
    devices: &[LinuxDevice],
) -> Vec<LinuxDeviceCgroup> {
    let mut rules = vec![rule(false, LinuxDeviceType::A, -1, -1, "rwm")];
    rules.extend_from_slice(spec_rules);
    for &(typ, major, minor, access) in DEFAULT_ALLOWED {
        rules.push(rule(true, typ, major, minor, access));
    }
    for d in devices {
        let typ = match d.typ() {
            LinuxDeviceType::B => LinuxDeviceType::B,
            // Character, unbuffered or FIFO-less: the kernel sees a char device.
            LinuxDeviceType::C | LinuxDeviceType::U => LinuxDeviceType::C,
            _ => continue,
        };
        rules.push(rule(true, typ, d.major(), d.minor(), "rwm"));
    }
    rules
}

// The program's context, struct bpf_cgroup_dev_ctx: access_type (type in
// the low 16 bits, access in the high ones), major, minor.
const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;
const BPF_DEVCG_ACC_MKNOD: i32 = 1;
const BPF_DEVCG_ACC_READ: i32 = 2;
const BPF_DEVCG_ACC_WRITE: i32 = 4;

// Instruction classes and operations (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

/// One eBPF instruction, `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'r' => BPF_DEVCG_ACC_READ,
            'w' => BPF_DEVCG_ACC_WRITE,
            'm' => BPF_DEVCG_ACC_MKNOD,
            _ => 0,
        }
    })
}

/// Compiles `rules` into a device program: the last rule that matches a
/// request decides (as with v1's files); no match denies. Rules before one
/// that matches everything are left out: it decides alone.
pub fn compile(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    // r2 = type, r3 = access, r4 = major, r5 = minor.
    let mut prog = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_MOV_X, 3, 2, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    // Last rule first: the first block that matches returns.
    'rules: for r in rules.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Jumps to the block's end, patched once its length is known.
        let mut jumps: Vec<usize> = Vec::new();
        let typ = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::B => Some(BPF_DEVCG_DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(BPF_DEVCG_DEV_CHAR),
            LinuxDeviceType::A => None,
            // A FIFO is no device: the rule matches nothing.
            LinuxDeviceType::P => continue 'rules,
        };
        if let Some(t) = typ {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 2, 0, 0, t));
        }
        let access = r.access().as_deref().map_or(0o7, access_bits);
        let others = !access & 0x7;
        if others != 0 {
            // Matches only when the request asks for nothing else.
            block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, others));
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 1, 0, 0, 0));
        }
        for (reg, num) in [(4u8, r.major()), (5u8, r.minor())] {
            if let Some(n) = num.filter(|n| *n >= 0) {
                // No device has a number past i32: such a rule matches none.
                let Ok(n) = i32::try_from(n) else {
                    continue 'rules;
                };
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, reg, 0, 0, n));
            }
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow())));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let end = block.len();
        let catch_all = jumps.is_empty();
        for j in jumps {
            block[j].off = (end - j - 1) as i16;
        }
        prog.extend(block);
        if catch_all {
            // It decides every request: what follows would be unreachable,
            // which the verifier refuses.
            return prog;
        }
    }
    prog.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel
/// takes the rest as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The fields of `union bpf_attr` for BPF_PROG_ATTACH and BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised repr(C) prefix of union
    // bpf_attr for `cmd`, and its size is passed with it; the pointers in
    // it (instructions, license, log) outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads a device program. Without a log first; when the kernel refuses
/// it, once more with the verifier's log, whose end goes into the error.
fn load(prog: &[Insn]) -> io::Result<OwnedFd> {
    let license = CString::new("Apache-2.0").map_err(io::Error::other)?;
    let attempt = |log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            ..Default::default()
        };
        attr.prog_name[..6].copy_from_slice(b"devcg\0");
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let fd = match attempt(&mut []) {
        Ok(fd) => fd,
        Err(first) => {
            let mut log = vec![0u8; 1 << 16];
            return Err(match attempt(&mut log) {
                Ok(_) => first,
                Err(e) => {
                    let text = String::from_utf8_lossy(&log);
                    let text = text.trim_end_matches('\0').trim();
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(400)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    io::Error::new(
                        e.kind(),
                        format!("load device program: {e}: verifier: {tail}"),
                    )
                }
            });
        }
    };
    // SAFETY: BPF_PROG_LOAD just returned this new descriptor, owned by
    // nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The device programs this process attached to one cgroup v2 directory:
/// normally one; more only while an old one could not be detached.
#[derive(Debug, Default)]
pub struct DeviceFilter {
    progs: Vec<OwnedFd>,
}

impl DeviceFilter {
    /// Loads the program for `rules`, attaches it to the cgroup directory
    /// `dir`, then detaches the ones attached before, so there is no moment
    /// without a filter. When the new one cannot be attached, nothing
    /// changes; an old one that will not detach stays held (and attached:
    /// with several, each must allow) and is named in the error.
    pub fn replace(&mut self, dir: &Path, rules: &[LinuxDeviceCgroup]) -> io::Result<()> {
        let prog = load(&compile(rules))?;
        let cgroup = std::fs::File::open(dir)?;
        let attr = |fd: &OwnedFd, flags: u32| AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: flags,
            ..Default::default()
        };
        bpf(BPF_PROG_ATTACH, &mut attr(&prog, BPF_F_ALLOW_MULTI))?;
        let mut failed = None;
        let mut kept = Vec::new();
        for old in self.progs.drain(..) {
            if let Err(e) = bpf(BPF_PROG_DETACH, &mut attr(&old, 0)) {
                failed = Some(e);
                kept.push(old);
            }
        }
        kept.push(prog);
        self.progs = kept;
        match failed {
            Some(e) => Err(io::Error::new(
                e.kind(),
                format!("detach the former device program: {e}"),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluates a compiled program on one request, instruction by
    /// instruction, as the kernel would: the compiler is checked against the
    /// rules' meaning without loading anything.
    fn run(prog: &[Insn], typ: i32, access: i32, major: u32, minor: u32) -> i64 {
        let ctx = [((access as u32) << 16) | typ as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                ALU32_MOV_X => r[dst] = r[src] & 0xffff_ffff,
                ALU32_AND_K => r[dst] = (r[dst] & (i.imm as u32 as u64)) & 0xffff_ffff,
                ALU32_RSH_K => r[dst] = (r[dst] & 0xffff_ffff) >> i.imm,
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => return r[0] as i64,
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    const C: i32 = BPF_DEVCG_DEV_CHAR;
    const B: i32 = BPF_DEVCG_DEV_BLOCK;
    const R: i32 = BPF_DEVCG_ACC_READ;
    const W: i32 = BPF_DEVCG_ACC_WRITE;
    const M: i32 = BPF_DEVCG_ACC_MKNOD;

    #[test]
    fn default_rules_allow_the_usual_devices_only() {
        let prog = compile(&container_rules(&[], &[]));
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
            (136, 4),
        ] {
            assert_eq!(run(&prog, C, R, major, minor), 1, "c {major}:{minor} read");
            assert_eq!(run(&prog, C, W, major, minor), 1, "c {major}:{minor} write");
        }
        // Anything may be created, not opened.
        assert_eq!(run(&prog, C, M, 10, 229), 1);
        assert_eq!(run(&prog, B, M, 8, 0), 1);
        for (typ, major, minor) in [(C, 10, 229), (C, 1, 1), (C, 1, 11), (B, 8, 0), (C, 4, 1)] {
            assert_eq!(run(&prog, typ, R, major, minor), 0, "{typ} {major}:{minor}");
            assert_eq!(run(&prog, typ, W, major, minor), 0, "{typ} {major}:{minor}");
        }
    }

    #[test]
    fn later_rules_override_and_spec_devices_are_allowed() {
        let fuse = oci_spec::runtime::LinuxDeviceBuilder::default()
            .path("/dev/fuse")
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(229)
            .build()
            .unwrap();
        let prog = compile(&container_rules(&[], &[fuse]));
        assert_eq!(run(&prog, C, R | W, 10, 229), 1);
        assert_eq!(run(&prog, C, R, 10, 230), 0);

        // The spec allows everything, then the defaults follow: all open.
        let all = rule(true, LinuxDeviceType::A, -1, -1, "rwm");
        let prog = compile(&container_rules(std::slice::from_ref(&all), &[]));
        assert_eq!(run(&prog, B, R, 8, 0), 1);
        // A later deny of one device wins over an earlier allow-all.
        let deny_sda = rule(false, LinuxDeviceType::B, 8, 0, "rw");
        let prog = compile(&[all.clone(), deny_sda.clone()]);
        assert_eq!(run(&prog, B, R, 8, 0), 0);
        assert_eq!(run(&prog, B, M, 8, 0), 1, "mknod was not denied");
        assert_eq!(run(&prog, B, R, 8, 1), 1);
    }

    #[test]
    fn nothing_follows_a_rule_that_matches_everything() {
        // The kernel refuses unreachable instructions: a catch-all ends
        // the program.
        let deny_all = rule(false, LinuxDeviceType::A, -1, -1, "rwm");
        let prog = compile(std::slice::from_ref(&deny_all));
        assert_eq!(prog.len(), 6 + 2);
        let prog = compile(&container_rules(&[], &[]));
        assert_eq!(prog.last().map(|i| i.code), Some(JMP_EXIT));
        assert_eq!(prog[prog.len() - 2].imm, 0, "the deny-all is last");
        // Rules before a later catch-all are dropped.
        let ro = rule(true, LinuxDeviceType::C, 4, -1, "r");
        assert_eq!(compile(&[ro, deny_all]).len(), 8);
    }

    #[test]
    fn numbers_past_i32_match_nothing() {
        // Truncated, 2^32 + 3 would have allowed /dev/null's minor 3.
        let huge = rule(true, LinuxDeviceType::C, 1, (1i64 << 32) + 3, "rwm");
        let prog = compile(&[rule(false, LinuxDeviceType::A, -1, -1, "rwm"), huge]);
        assert_eq!(run(&prog, C, R, 1, 3), 0);
    }

    #[test]
    fn read_only_rule_refuses_writes() {
        let ro = rule(true, LinuxDeviceType::C, 4, -1, "r");
        let prog = compile(&[rule(false, LinuxDeviceType::A, -1, -1, "rwm"), ro]);
        assert_eq!(run(&prog, C, R, 4, 7), 1);
        assert_eq!(run(&prog, C, W, 4, 7), 0);
        assert_eq!(run(&prog, C, R | W, 4, 7), 0);
    }
}
