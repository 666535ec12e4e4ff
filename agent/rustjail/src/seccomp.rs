//! Seccomp from the spec's `linux.seccomp`, compiled to BPF in process by
//! `seccompiler` (no libseccomp: the agent is a static binary).
//!
//! A profile has one default action and per-syscall actions. `seccompiler`
//! builds filters with one match action each, so the profile becomes a
//! stack of filters, which the kernel evaluates all, keeping the action of
//! highest precedence (kill > trap > errno > trace > log > allow):
//! - a *default* filter: every listed syscall (with its conditions) is
//!   allowed, anything else gets the default action;
//! - one filter per other action: its syscalls get that action, anything
//!   else is allowed.
//!
//! A listed syscall thus gets its own action (the default filter allows
//! it), an unlisted one the default action. Names this architecture does
//! not know are skipped, as libseccomp does. Only the native architecture
//! is accepted: a syscall from another ABI kills the process.

use std::collections::{BTreeMap, HashMap};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{SetupError, SetupResult};
use crate::seccomp_table::syscall_nr;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

fn err(cause: impl Into<String>) -> SetupError {
    SetupError::new("seccomp", cause)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> SetupResult<SeccompAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActTrace => {
            SeccompAction::Trace(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(err("action SCMP_ACT_NOTIFY is not supported"))
        }
    })
}

/// Rules of one syscall entry: conditions are ANDed, except that several
/// conditions on the same argument become separate (ORed) rules, as runc
/// does. An empty list matches the syscall unconditionally.
fn rules(sc: &LinuxSyscall) -> SetupResult<Vec<SeccompRule>> {
    let args = sc.args().as_deref().unwrap_or_default();
    let mut conds = Vec::new();
    for a in args {
        let index = u8::try_from(a.index())
            .ok()
            .filter(|i| *i < 6)
            .ok_or_else(|| err(format!("argument index {} out of range", a.index())))?;
        let (op, value) = match a.op() {
            LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
            LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
            LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
            LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
            LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
            LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
            LinuxSeccompOperator::ScmpCmpMaskedEq => (
                SeccompCmpOp::MaskedEq(a.value()),
                a.value_two().unwrap_or(0),
            ),
        };
        let cond = SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
            .map_err(|e| err(format!("argument {index}: {e}")))?;
        conds.push((index, cond));
    }
    if conds.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = std::collections::HashSet::new();
    let repeated = conds.iter().any(|(i, _)| !seen.insert(*i));
    let built = if repeated {
        conds
            .into_iter()
            .map(|(_, c)| SeccompRule::new(vec![c]))
            .collect::<Result<Vec<_>, _>>()
    } else {
        SeccompRule::new(conds.into_iter().map(|(_, c)| c).collect()).map(|r| vec![r])
    };
    built.map_err(|e| err(e.to_string()))
}

/// Syscall number -> rules; an empty rule list (unconditional) absorbs
/// conditional ones.
type RuleMap = BTreeMap<i64, Vec<SeccompRule>>;

fn add(map: &mut RuleMap, nr: i64, rules: &[SeccompRule]) {
    match map.get_mut(&nr) {
        Some(existing) if existing.is_empty() => {}
        Some(_) if rules.is_empty() => {
            map.insert(nr, Vec::new());
        }
        Some(existing) => existing.extend(rules.iter().cloned()),
        None => {
            map.insert(nr, rules.to_vec());
        }
    }
}

fn filter(
    rules: RuleMap,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> SetupResult<BpfProgram> {
    let f = SeccompFilter::new(rules, mismatch, matched, ARCH).map_err(|e| err(e.to_string()))?;
    f.try_into()
        .map_err(|e: seccompiler::BackendError| err(e.to_string()))
}

/// Compiles a profile into the filters to install, in order.
pub(crate) fn compile(profile: &LinuxSeccomp) -> SetupResult<Vec<BpfProgram>> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut allowed_by_default = RuleMap::new();
    // Keyed by the action's BPF return value: SeccompAction is not Ord.
    let mut groups: HashMap<u32, (SeccompAction, RuleMap)> = HashMap::new();
    for sc in profile.syscalls().as_deref().unwrap_or_default() {
        let act = action(sc.action(), sc.errno_ret())?;
        if act == default {
            continue;
        }
        let rules = rules(sc)?;
        for name in sc.names() {
            let Some(nr) = syscall_nr(name) else {
                continue;
            };
            add(&mut allowed_by_default, nr, &rules);
            if act != SeccompAction::Allow {
                let group = groups
                    .entry(u32::from(act.clone()))
                    .or_insert_with(|| (act.clone(), RuleMap::new()));
                add(&mut group.1, nr, &rules);
            }
        }
    }
    let mut progs = Vec::new();
    if default != SeccompAction::Allow {
        progs.push(filter(allowed_by_default, default, SeccompAction::Allow)?);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|(k, _)| *k);
    for (_, (act, rules)) in groups {
        progs.push(filter(rules, SeccompAction::Allow, act)?);
    }
    Ok(progs)
}

/// Installs compiled filters on the calling thread.
pub(crate) fn install(progs: &[BpfProgram]) -> SetupResult<()> {
    for p in progs {
        seccompiler::apply_filter(p).map_err(|e| err(format!("install filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

    fn syscall(names: &[&str], act: LinuxSeccompAction) -> LinuxSyscall {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .action(act)
            .build()
            .unwrap()
    }

    #[test]
    fn groups_by_action() {
        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![
                syscall(
                    &["mkdir", "mkdirat", "not_a_syscall"],
                    LinuxSeccompAction::ScmpActErrno,
                ),
                syscall(&["getpid"], LinuxSeccompAction::ScmpActAllow),
                syscall(&["reboot"], LinuxSeccompAction::ScmpActKillProcess),
            ])
            .build()
            .unwrap();
        // Default allow: no default filter, one filter each for errno and kill.
        assert_eq!(compile(&profile).unwrap().len(), 2);

        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .default_errno_ret(38u32)
            .syscalls(vec![syscall(
                &["read", "write"],
                LinuxSeccompAction::ScmpActAllow,
            )])
            .build()
            .unwrap();
        assert_eq!(compile(&profile).unwrap().len(), 1);
    }

    #[test]
    fn conditions() {
        let arg = |index: usize, op, value: u64| {
            LinuxSeccompArgBuilder::default()
                .index(index)
                .op(op)
                .value(value)
                .build()
                .unwrap()
        };
        let mut sc = syscall(&["personality"], LinuxSeccompAction::ScmpActAllow);
        sc.set_args(Some(vec![
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 0),
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 8),
        ]));
        assert_eq!(rules(&sc).unwrap().len(), 2);
        sc.set_args(Some(vec![
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 0),
            arg(1, LinuxSeccompOperator::ScmpCmpGt, 8),
        ]));
        assert_eq!(rules(&sc).unwrap().len(), 1);
        sc.set_args(Some(vec![arg(6, LinuxSeccompOperator::ScmpCmpEq, 0)]));
        assert!(rules(&sc).is_err());
        let notify = syscall(&["read"], LinuxSeccompAction::ScmpActNotify);
        let profile = LinuxSeccompBuilder::default()
            .syscalls(vec![notify])
            .build()
            .unwrap();
        assert_eq!(
            compile(&profile).unwrap_err().to_string(),
            "seccomp: action SCMP_ACT_NOTIFY is not supported"
        );
    }
}
