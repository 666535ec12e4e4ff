//! `ephemeral`: a memory filesystem at the mount point.
//!
//! - fstype `tmpfs` (or none): Kubernetes `emptyDir` with medium `Memory`,
//!   the sandbox's `/dev/shm`. Options are tmpfs options and flags
//!   (`size=`, `mode=`, `nosuid`, ...); `fsgid=` sets the group.
//! - fstype `hugetlbfs`: a `hugepages-<size>` emptyDir. The Go runtime sends
//!   `["pagesize=<bytes>,size=<bytes>"]`; the pool of that page size is
//!   grown to `size / pagesize` pages first (upstream writes the count to
//!   `nr_hugepages` too; ours never shrinks a pool that is larger), and
//!   the kernel must have granted them before anything is mounted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MntFlags;
use protocols::agent::Storage;

use super::local::{apply_fsgid, parse_fsgid};
use super::options::{filesystem_options, without_keys};
use super::{Ctx, MountOptions, StorageError, Undo};

const TMPFS: &str = "tmpfs";
const HUGETLBFS: &str = "hugetlbfs";
/// The hugepage pools, one directory per page size (`hugepages-2048kB`).
pub(super) const SYS_HUGEPAGES: &str = "/sys/kernel/mm/hugepages";

/// Flags that would turn the mount into something else: dropped.
pub(super) struct Plan {
    fstype: &'static str,
    source: String,
    options: MountOptions,
    fsgid: Option<u32>,
    hugepages: Option<Hugepages>,
}

/// A hugepage pool to grow before mounting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hugepages {
    /// `.../hugepages-<kB>kB/nr_hugepages`.
    pool: PathBuf,
    pages: u64,
}

/// Why hugetlbfs options are unusable.
#[derive(Debug, thiserror::Error)]
enum HugepageOptionError {
    #[error("hugetlbfs needs a {0}= option (in bytes)")]
    Missing(&'static str),
    #[error("option {name}={value}: not a positive number of bytes")]
    NotBytes { name: &'static str, value: String },
    #[error("option pagesize={0}: not a whole number of KiB")]
    NotKib(u64),
}

/// `pagesize=` and `size=` in bytes from options that may hold several
/// comma-separated entries each (the Go runtime sends one string).
fn hugepage_sizes(options: &[String]) -> Result<(u64, u64), HugepageOptionError> {
    let mut pagesize = None;
    let mut size = None;
    for opt in options.iter().flat_map(|o| o.split(',')) {
        let opt = opt.trim();
        if let Some(v) = opt.strip_prefix("pagesize=") {
            pagesize = Some(v);
        } else if let Some(v) = opt.strip_prefix("size=") {
            size = Some(v);
        }
    }
    let parse = |name: &'static str, v: Option<&str>| -> Result<u64, HugepageOptionError> {
        let v = v.ok_or(HugepageOptionError::Missing(name))?;
        match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(HugepageOptionError::NotBytes {
                name,
                value: v.to_string(),
            }),
        }
    };
    let pagesize = parse("pagesize", pagesize)?;
    let size = parse("size", size)?;
    if pagesize % 1024 != 0 {
        return Err(HugepageOptionError::NotKib(pagesize));
    }
    Ok((pagesize, size))
}

pub(super) fn plan(ctx: &Ctx<'_>, s: &Storage) -> Result<Plan, StorageError> {
    let fstype = match s.fstype.as_str() {
        "" | TMPFS => TMPFS,
        HUGETLBFS => HUGETLBFS,
        other => {
            return Err(ctx.invalid(format!(
                "fstype \"{other}\" is not supported (only {TMPFS}, {HUGETLBFS})"
            )))
        }
    };
    if s.source.contains('\0') {
        return Err(ctx.invalid("source contains a nul byte"));
    }
    let fsgid = parse_fsgid(ctx, &s.options)?;
    let options = filesystem_options(&without_keys(&s.options, &["fsgid"]));
    if options.data.contains('\0') {
        return Err(ctx.invalid("options contain a nul byte"));
    }
    let hugepages = if fstype == HUGETLBFS {
        let (pagesize, size) =
            hugepage_sizes(&s.options).map_err(|r| ctx.invalid(r.to_string()))?;
        let dir = ctx
            .hugepages
            .join(format!("hugepages-{}kB", pagesize / 1024));
        if !dir.is_dir() {
            return Err(ctx.invalid(format!(
                "page size {pagesize}: not offered by this kernel (no {})",
                dir.display()
            )));
        }
        Some(Hugepages {
            pool: dir.join("nr_hugepages"),
            pages: size / pagesize,
        })
    } else {
        None
    };
    let source = match (s.source.is_empty(), fstype) {
        (false, _) => s.source.clone(),
        (true, HUGETLBFS) => "nodev".to_owned(),
        (true, _) => TMPFS.to_owned(),
    };
    Ok(Plan {
        fstype,
        source,
        options,
        fsgid,
        hugepages,
    })
}

fn read_pool(pool: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(pool)?;
    text.trim().parse::<u64>().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected content {:?}", text.trim()),
        )
    })
}

/// Grows the pool to `pages` and checks that the kernel granted them.
fn allocate(ctx: &Ctx<'_>, h: &Hugepages) -> Result<(), StorageError> {
    let shown = h.pool.display();
    let have = read_pool(&h.pool).map_err(|e| ctx.io(format!("read {shown}"), e))?;
    if have >= h.pages {
        return Ok(());
    }
    fs::write(&h.pool, h.pages.to_string())
        .map_err(|e| ctx.io(format!("write {} to {shown}", h.pages), e))?;
    let granted = read_pool(&h.pool).map_err(|e| ctx.io(format!("read {shown}"), e))?;
    if granted < h.pages {
        return Err(ctx.invalid(format!(
            "only {granted} of {} hugepages granted ({shown})",
            h.pages
        )));
    }
    Ok(())
}

pub(super) fn apply(ctx: &Ctx<'_>, plan: &Plan) -> Result<Undo, StorageError> {
    if let Some(h) = &plan.hugepages {
        allocate(ctx, h)?;
    }
    let created = ctx.create_dir()?;
    if let Err(e) = ctx.mount(
        &format!("mount {}", plan.fstype),
        Some(&plan.source),
        Some(plan.fstype),
        plan.options.flags,
        plan.options.data(),
    ) {
        ctx.remove_created(&created);
        return Err(e);
    }
    let after = (|| {
        if !plan.options.propagation.is_empty() {
            ctx.mount(
                "set propagation",
                None,
                None,
                plan.options.propagation,
                None,
            )?;
        }
        if let Some(gid) = plan.fsgid {
            apply_fsgid(ctx, gid)?;
        }
        Ok(())
    })();
    if let Err(e) = after {
        ctx.unmount_after_failure();
        ctx.remove_created(&created);
        return Err(e);
    }
    Ok(Undo {
        unmount: Some(MntFlags::empty()),
        created,
        remove_tree: false,
        ..Undo::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|o| (*o).to_owned()).collect()
    }

    #[test]
    fn hugepage_options_as_the_go_runtime_sends_them() {
        for o in [
            opts(&["pagesize=2097152,size=524288000"]),
            opts(&["size=524288000,pagesize=2097152"]),
            opts(&["pagesize=2097152", "size=524288000"]),
            opts(&["foo=bar,pagesize=2097152,x=y,size=524288000"]),
        ] {
            assert_eq!(
                hugepage_sizes(&o).ok(),
                Some((2_097_152, 524_288_000)),
                "{o:?}"
            );
        }
    }

    #[test]
    fn hugepage_options_refused() {
        for (o, why) in [
            (opts(&["size=524288000"]), "needs a pagesize="),
            (opts(&["pagesize=2097152"]), "needs a size="),
            (opts(&["pagesize=2M,size=1"]), "pagesize=2M: not a positive"),
            (opts(&["pagesize=2097152,size="]), "size=: not a positive"),
            (opts(&["pagesize=0,size=1"]), "pagesize=0"),
            (opts(&["pagesize=1000,size=1000"]), "whole number of KiB"),
            (opts(&["size-1=1,pagesize-1=2048"]), "needs a pagesize="),
        ] {
            let err = hugepage_sizes(&o).unwrap_err().to_string();
            assert!(err.contains(why), "{o:?}: {err}");
        }
    }
}
