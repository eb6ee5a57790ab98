//! The broker's strict load (sshd's `StrictModes`) on real files: each
//! attack as an attacker would mount it, each with its control. The tests
//! run as root, so root is the broker's uid and uid 2002 the other user.

use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use unbaked_policy::{
    load_dir, load_dir_with, read_dir_sources_with, rule, trust_warnings, Diagnostics, Severity,
    Strictness, MAX_POLICY_FILES,
};

const OTHER: u32 = 2002;
const POLICY: &str = "workload = \"a\"\n[match]\nuids = [1]\n";

fn strict(dir: &Path) -> Result<unbaked_policy::PolicySet, Diagnostics> {
    load_dir_with(dir, Strictness::Strict)
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A policies directory made by root inside root's private temporary
/// directory under /tmp (root-owned, sticky): what the broker tests use.
struct Setup {
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("policies");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        Setup { tmp, dir }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, text).unwrap();
        chmod(&path, 0o644);
        path
    }

    /// A file outside the policies directory.
    fn outside(&self, name: &str, text: &str) -> PathBuf {
        let path = self.tmp.path().join(name);
        fs::write(&path, text).unwrap();
        chmod(&path, 0o644);
        path
    }
}

/// The one error of a refused set, as text.
fn one_error(diags: &Diagnostics) -> String {
    assert_eq!(diags.len(), 1, "{diags}");
    assert_eq!(diags.0[0].rule, rule::IO, "{diags}");
    assert_eq!(diags.0[0].severity, Severity::Error, "{diags}");
    diags.0[0].to_string()
}

#[test]
fn root_owned_files_not_writable_by_others_load_under_tmp() {
    // The control for every test below: /tmp (1777 root) → 0700 root
    // tempdir → 0755 root policies → 0644 root file.
    let s = Setup::new();
    s.write("a.toml", POLICY);
    let set = strict(&s.dir).unwrap();
    assert_eq!(set.get("a").unwrap().source, s.dir.join("a.toml"));
    // Owner-only and read-only modes are fine too.
    chmod(&s.dir.join("a.toml"), 0o400);
    chmod(&s.dir, 0o700);
    assert!(strict(&s.dir).is_ok());
}

#[test]
fn a_file_writable_by_others_is_refused_and_named_with_the_fix() {
    let s = Setup::new();
    let file = s.write("a.toml", POLICY);
    chmod(&file, 0o666);
    let err = one_error(&strict(&s.dir).unwrap_err());
    assert_eq!(
        err,
        format!(
            "{0}: error: the file is writable by group and others (mode 0666) (hint: chmod 0644 {0}: policy files decide who gets secrets, so the broker loads them only if nobody but root and its own uid can change them)",
            file.display()
        )
    );
    chmod(&file, 0o664);
    assert!(one_error(&strict(&s.dir).unwrap_err())
        .contains("the file is writable by group (mode 0664) (hint: chmod 0644"));
    chmod(&file, 0o644);
    assert!(strict(&s.dir).is_ok());
}

#[test]
fn a_file_owned_by_another_user_is_refused() {
    let s = Setup::new();
    let file = s.write("a.toml", POLICY);
    chown(&file, Some(OTHER), None).unwrap();
    let err = one_error(&strict(&s.dir).unwrap_err());
    assert!(
        err.contains(&format!(
            "the file is owned by uid 2002, not root or the broker's uid 0 (hint: chown root {}",
            file.display()
        )),
        "{err}"
    );
    // Control: back to root.
    chown(&file, Some(0), None).unwrap();
    assert!(strict(&s.dir).is_ok());
}

#[test]
fn a_symlink_out_of_the_directory_is_refused_whoever_owns_the_target() {
    let s = Setup::new();
    let theirs = s.outside("theirs.toml", POLICY);
    chown(&theirs, Some(OTHER), None).unwrap();
    symlink(&theirs, s.dir.join("a.toml")).unwrap();
    let err = one_error(&strict(&s.dir).unwrap_err());
    assert!(
        err.contains(&format!(
            "the symlink points at {}, which is outside the policy directory",
            theirs.display()
        )),
        "{err}"
    );
    // Root's own file outside: still refused (the link leaves), and so is
    // a relative link that climbs out.
    let ours = s.outside("ours.toml", POLICY);
    fs::remove_file(s.dir.join("a.toml")).unwrap();
    symlink(&ours, s.dir.join("a.toml")).unwrap();
    assert!(one_error(&strict(&s.dir).unwrap_err()).contains("outside the policy directory"));
    fs::remove_file(s.dir.join("a.toml")).unwrap();
    symlink("../ours.toml", s.dir.join("a.toml")).unwrap();
    assert!(one_error(&strict(&s.dir).unwrap_err()).contains("outside the policy directory"));
    // A tool reading the checkout follows it, as before.
    assert!(load_dir(&s.dir).is_ok());
}

#[test]
fn a_symlink_inside_the_directory_is_followed_if_its_target_passes() {
    let s = Setup::new();
    fs::create_dir(s.dir.join("available")).unwrap();
    chmod(&s.dir.join("available"), 0o755);
    let target = s.write("available/a.toml", POLICY);
    symlink("available/a.toml", s.dir.join("a.toml")).unwrap();
    let set = strict(&s.dir).unwrap();
    assert_eq!(set.get("a").unwrap().source, s.dir.join("a.toml"));
    // An absolute link into the same directory is the same thing.
    fs::remove_file(s.dir.join("a.toml")).unwrap();
    symlink(&target, s.dir.join("a.toml")).unwrap();
    assert!(strict(&s.dir).is_ok());

    // The target is judged like a file in the directory.
    chmod(&target, 0o666);
    let err = one_error(&strict(&s.dir).unwrap_err());
    assert!(
        err.starts_with(&format!(
            "{}: error: the file {} points at is writable by group and others",
            target.display(),
            s.dir.join("a.toml").display()
        )),
        "{err}"
    );
    chmod(&target, 0o644);
    // So is every directory on the way.
    chmod(&s.dir.join("available"), 0o777);
    assert!(one_error(&strict(&s.dir).unwrap_err()).contains("the directory is writable"));
    chmod(&s.dir.join("available"), 0o755);

    // A link to a link is refused: one hop, no chains to reason about.
    symlink("available/a.toml", s.dir.join("hop")).unwrap();
    fs::remove_file(s.dir.join("a.toml")).unwrap();
    symlink("hop", s.dir.join("a.toml")).unwrap();
    assert!(one_error(&strict(&s.dir).unwrap_err()).contains("another symlink"));
}

#[test]
fn the_directory_and_every_ancestor_are_checked() {
    let s = Setup::new();
    s.write("a.toml", POLICY);
    // The directory itself: writable by others, or another user's.
    chmod(&s.dir, 0o777);
    let err = one_error(&strict(&s.dir).unwrap_err());
    assert!(
        err.starts_with(&format!(
            "{0}: error: the directory is writable by group and others (mode 0777) (hint: chmod 0755 {0}",
            s.dir.display()
        )),
        "{err}"
    );
    // Even sticky: anyone could add a file.
    chmod(&s.dir, 0o1777);
    assert!(one_error(&strict(&s.dir).unwrap_err()).contains("chmod 1755"));
    chmod(&s.dir, 0o755);
    chown(&s.dir, Some(OTHER), None).unwrap();
    assert!(one_error(&strict(&s.dir).unwrap_err()).contains("owned by uid 2002"));
    chown(&s.dir, Some(0), None).unwrap();
    assert!(strict(&s.dir).is_ok());

    // An ancestor another user can write: they could rename the policies
    // directory away and put their own in its place.
    let parent = s.tmp.path();
    chmod(parent, 0o777);
    let err = one_error(&strict(&s.dir).unwrap_err());
    assert!(
        err.starts_with(&format!(
            "{}: error: the directory is writable",
            parent.display()
        )),
        "{err}"
    );
    // Sticky and root's, like /tmp: only root can rename root's entries.
    chmod(parent, 0o1777);
    assert!(strict(&s.dir).is_ok());
    // Sticky but another user's: the owner of a sticky directory can.
    chown(parent, Some(OTHER), None).unwrap();
    let diags = strict(&s.dir).unwrap_err();
    assert_eq!(diags.len(), 2, "{diags}");
    assert!(diags.0[0].message.contains("owned by uid 2002"), "{diags}");
    assert!(diags.0[1].message.contains("writable"), "{diags}");
    chown(parent, Some(0), None).unwrap();
    chmod(parent, 0o700);
    assert!(strict(&s.dir).is_ok());
}

#[test]
fn every_problem_is_reported_at_once_and_tools_still_read_the_files() {
    let s = Setup::new();
    let a = s.write("a.toml", POLICY);
    let b = s.write("b.toml", &POLICY.replace("\"a\"", "\"b\""));
    chmod(&s.dir, 0o775);
    chmod(&a, 0o666);
    chown(&b, Some(OTHER), None).unwrap();
    let diags = strict(&s.dir).unwrap_err();
    let files: Vec<&Path> = diags.iter().map(|d| d.file.as_path()).collect();
    assert_eq!(files, [s.dir.as_path(), &a, &b], "{diags}");
    // The refused files were not read: no parse errors from them either.
    let (sources, _) = read_dir_sources_with(&s.dir, Strictness::Strict);
    assert!(sources.is_empty());

    // `policy check` and friends read a developer's checkout as data.
    assert_eq!(load_dir(&s.dir).unwrap().len(), 2);
    // ...and can show what the broker would refuse, as warnings.
    let warnings = trust_warnings(&s.dir);
    assert_eq!(warnings.len(), 3, "{warnings}");
    assert!(warnings.iter().all(|d| d.severity == Severity::Warning));
    assert!(!warnings.has_errors());
}

#[test]
fn the_configured_path_may_be_a_symlink_to_a_trusted_directory() {
    let s = Setup::new();
    s.write("a.toml", POLICY);
    let link = s.tmp.path().join("current");
    symlink(&s.dir, &link).unwrap();
    let set = strict(&link).unwrap();
    assert_eq!(set.get("a").unwrap().source, link.join("a.toml"));
    // ...and the real directory is what is judged.
    chmod(&s.dir, 0o777);
    assert!(one_error(&strict(&link).unwrap_err()).contains("the directory is writable"));
}

#[test]
fn non_files_are_skipped_without_blocking_and_a_missing_directory_is_one_error() {
    let s = Setup::new();
    s.write("a.toml", POLICY);
    nix::unistd::mkfifo(&s.dir.join("fifo.toml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    fs::create_dir(s.dir.join("dir.toml")).unwrap();
    assert_eq!(strict(&s.dir).unwrap().len(), 1);

    let missing = s.dir.join("missing");
    let diags = strict(&missing).unwrap_err();
    assert!(
        one_error(&diags).starts_with(&format!(
            "{}: error: cannot read the policy directory",
            missing.display()
        )),
        "{diags}"
    );
    // A file where the directory should be.
    let err = one_error(&strict(&s.dir.join("a.toml")).unwrap_err());
    assert!(err.contains("is not a directory"), "{err}");
}

#[test]
fn too_many_files_are_refused_unread() {
    let s = Setup::new();
    for i in 0..=MAX_POLICY_FILES {
        fs::write(s.dir.join(format!("w{i}.toml")), "not toml").unwrap();
    }
    for strictness in [Strictness::Strict, Strictness::Relaxed] {
        let (sources, diags) = read_dir_sources_with(&s.dir, strictness);
        assert!(sources.is_empty());
        let err = one_error(&diags);
        assert!(
            err.contains("holds 4097 policy files, over the limit of 4096"),
            "{err}"
        );
    }
}
