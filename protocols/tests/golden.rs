//! Keeps the wire interface equal to `golden/wire.txt`.
//!
//! Any change to a method, message, field number, type or enum value shows
//! up as a diff here. After an intended change, rewrite the file with
//! `UPDATE_GOLDEN=1 cargo test -p protocols --test golden` and review the
//! diff against upstream Kata before committing it.

use std::fs;
use std::path::PathBuf;

use protocols::describe::wire_listing;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/wire.txt")
}

/// A line diff good enough for sorted listings: what disappeared and what
/// appeared.
fn diff(expected: &str, actual: &str) -> String {
    let want: Vec<&str> = expected.lines().collect();
    let got: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for line in &want {
        if !got.contains(line) {
            out.push_str(&format!("- {line}\n"));
        }
    }
    for line in &got {
        if !want.contains(line) {
            out.push_str(&format!("+ {line}\n"));
        }
    }
    if out.is_empty() {
        out.push_str("(same lines, different order or whitespace)\n");
    }
    out
}

#[test]
fn wire_interface_matches_golden_file() {
    let actual = wire_listing();
    let path = golden_path();

    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).expect("create golden dir");
        }
        fs::write(&path, &actual).expect("write golden file");
        eprintln!("rewrote {}", path.display());
        return;
    }

    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `UPDATE_GOLDEN=1 cargo test -p protocols --test golden` to create it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "the wire interface differs from {} (- golden, + generated):\n{}\n\
         If the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff.",
        path.display(),
        diff(&expected, &actual)
    );
}

#[test]
fn golden_counts_match_kata() {
    let text = wire_listing();
    let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("service grpc.AgentService method "), 42);
    assert_eq!(count("service grpc.Health method "), 2);
}
