//! Names the build in `unbaked --version`: the commit it came from, read
//! from .git directly (no git binary needed), or "unknown" outside a checkout.

use std::fs;
use std::path::Path;

fn commit(git: &Path) -> Option<String> {
    let head = fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return Some(head.to_string());
    };
    println!("cargo:rerun-if-changed=.git/{reference}");
    if let Ok(id) = fs::read_to_string(git.join(reference)) {
        return Some(id.trim().to_string());
    }
    let packed = fs::read_to_string(git.join("packed-refs")).ok()?;
    packed
        .lines()
        .find_map(|l| l.strip_suffix(reference).map(|id| id.trim().to_string()))
}

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/packed-refs");
    let id = commit(Path::new(".git")).unwrap_or_else(|| "unknown".into());
    let short = &id[..id.len().min(12)];
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    println!(
        "cargo:rustc-env=UNBAKED_BUILD={} (commit {short}, {profile}, {target})",
        env!("CARGO_PKG_VERSION")
    );
}
