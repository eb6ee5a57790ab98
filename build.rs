//! Names the build in `unbaked --version`: the commit it came from, read
//! from the git directory directly (no git binary needed), or "unknown"
//! outside a checkout.
//!
//! Cargo reruns a build script whose `rerun-if-changed` path is missing on
//! every build (and relinks everything after it), so only files that exist
//! are named. In a worktree `.git` is a file (`gitdir: ...`) and the branch
//! refs live in the common directory (`commondir`); both are followed.

use std::fs;
use std::path::{Path, PathBuf};

/// Tell cargo to rerun this script when `path` changes, if it exists.
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The git directory of the checkout at `root` and its common directory
/// (the same, except in a worktree).
fn git_dirs(root: &Path) -> Option<(PathBuf, PathBuf)> {
    let dot_git = root.join(".git");
    let git = if dot_git.is_dir() {
        dot_git
    } else {
        watch(&dot_git);
        let text = fs::read_to_string(&dot_git).ok()?;
        let dir = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
        if dir.is_absolute() {
            dir
        } else {
            root.join(dir)
        }
    };
    let common = match fs::read_to_string(git.join("commondir")) {
        Ok(c) => {
            let c = PathBuf::from(c.trim());
            if c.is_absolute() {
                c
            } else {
                git.join(c)
            }
        }
        Err(_) => git.clone(),
    };
    Some((git, common))
}

fn commit(git: &Path, common: &Path) -> Option<String> {
    let head_path = git.join("HEAD");
    watch(&head_path);
    let head = fs::read_to_string(&head_path).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return Some(head.to_string());
    };
    // A branch ref is per worktree only under refs/bisect, refs/worktree
    // and refs/rewritten; branches live in the common directory.
    let loose = common.join(reference);
    watch(&loose);
    if let Ok(id) = fs::read_to_string(&loose) {
        return Some(id.trim().to_string());
    }
    // Packed (or unborn): the next commit writes the loose ref, which
    // changes its directory.
    let packed_path = common.join("packed-refs");
    watch(&packed_path);
    if let Some(dir) = loose.parent() {
        watch(dir);
    }
    let packed = fs::read_to_string(&packed_path).ok()?;
    packed.lines().find_map(|l| {
        let (id, name) = l.split_once(' ')?;
        (name == reference).then(|| id.trim().to_string())
    })
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()));
    let id = git_dirs(&root)
        .and_then(|(git, common)| commit(&git, &common))
        .unwrap_or_else(|| "unknown".into());
    let short = &id[..id.len().min(12)];
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    println!(
        "cargo:rustc-env=UNBAKED_BUILD={} (commit {short}, {profile}, {target})",
        env!("CARGO_PKG_VERSION")
    );
    pack_relocations();
}

/// The static binary (scripts/build-static) is a static PIE: it relocates
/// itself at every start, reading one 24-byte RELA entry per pointer in its
/// data. Packed relative relocations (DT_RELR: GNU ld 2.38, glibc 2.36)
/// hold the same in a bitmap a small fraction of that size, so an exec
/// shim or a sidecar starts with fewer page faults and keeps fewer pages.
/// ASLR is unchanged: the binary still loads at a random address.
fn pack_relocations() {
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let static_pie = features.split(',').any(|f| f == "crt-static")
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if static_pie {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        order_sidecar_code();
    }
}

/// The long-running sidecar's VmRSS is mostly pages of this binary's text:
/// the kernel maps the 64 KiB around each page it runs (fault-around, or
/// the page cache's whole folio), and the code a sidecar runs (std's and
/// libc's start, clap, tokio, hyper's client, serde_json, the secrets
/// directory) is spread over the 11 MiB of text among the broker's, so it
/// maps about 6.4 MiB of it. Laid out together (rust-lld's
/// `--symbol-ordering-file`, the linker of the pinned toolchain on this
/// target), the same code takes about 1 MiB. `scripts/sidecar-order`
/// writes the list (the functions a traced sidecar ran); a name no
/// longer in the build is skipped, so a stale list only costs memory.
/// Another linker (a `linker` in RUSTFLAGS) gets no ordering.
fn order_sidecar_code() {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") {
        return;
    }
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()));
    let order = root.join("scripts").join("sidecar.order");
    if order.is_file() {
        println!("cargo:rerun-if-changed={}", order.display());
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
