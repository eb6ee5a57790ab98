//! The operator's store key: 32 bytes, written as 64 hex digits in a file
//! only the broker may read. The file store and the Vault cache seal what
//! they keep on disk under keys derived from it; it is never stored beside
//! them.
//!
//! A key file is judged by `fstat` of the descriptor that is then read
//! (opened with `O_NOFOLLOW`): a regular file, owned by root or the
//! broker's euid, with no access at all for group or others. A key anyone
//! else can read is refused rather than used: whoever reads it reads every
//! secret on disk.

use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, SFlag};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;

/// The key material. No `Debug`, no `Clone`: it is borrowed where it is
/// needed and zeroed on drop.
pub struct StoreKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey([redacted])")
    }
}

impl StoreKey {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0[..]
    }

    /// A key from bytes (tests and benches).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> StoreKey {
        StoreKey(Zeroizing::new(bytes))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot open the store key {} (from {from}): {source}; create one with `unbaked store init-key FILE`", .path.display())]
    Open {
        path: PathBuf,
        from: &'static str,
        source: std::io::Error,
    },
    #[error("the store key {} (from {from}) is not a regular file: give the key file itself, not a link or a directory", .path.display())]
    NotAFile { path: PathBuf, from: &'static str },
    #[error("the store key {} (from {from}) is owned by uid {owner}, not root or the broker's uid {euid}: chown {euid} {}", .path.display(), .path.display())]
    Owner {
        path: PathBuf,
        from: &'static str,
        owner: u32,
        euid: u32,
    },
    #[error("the store key {} (from {from}) may be read or written by group or others (mode {mode:04o}): chmod 0400 {}", .path.display(), .path.display())]
    Mode {
        path: PathBuf,
        from: &'static str,
        mode: u32,
    },
    #[error("the store key {} (from {from}) does not hold a key: expected 64 hex digits (`unbaked store init-key FILE` writes one)", .path.display())]
    Format { path: PathBuf, from: &'static str },
    #[error("{} already exists: a store key is never overwritten (the secrets sealed under it would be lost); remove it first if that is really meant", .path.display())]
    Exists { path: PathBuf },
    #[error("cannot write the store key {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no system randomness for a new key")]
    Random,
}

/// Why a private file (a store key, a secret keyring) was refused.
#[derive(Debug)]
pub enum PrivateFileError {
    Open(std::io::Error),
    /// A link, a directory, a device: not the file itself.
    NotAFile,
    Owner {
        owner: u32,
        euid: u32,
    },
    Mode {
        mode: u32,
    },
}

/// Open a file only the broker may read, judged by `fstat` of the
/// descriptor returned (opened with `O_NOFOLLOW`): a regular file, owned
/// by root or the broker's euid, with no access at all for group or
/// others. Every key file the broker reads goes through here.
pub fn open_private(path: &Path) -> Result<std::fs::File, PrivateFileError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| {
            // O_NOFOLLOW on a symlink: ELOOP, which says nothing useful.
            if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                PrivateFileError::NotAFile
            } else {
                PrivateFileError::Open(e)
            }
        })?;
    let st = fstat(&file).map_err(|e| PrivateFileError::Open(e.into()))?;
    judge_meta(st.st_mode, st.st_uid, nix::unistd::geteuid().as_raw())?;
    Ok(file)
}

/// The judgement on a private file's `fstat`, pure.
pub fn judge_meta(mode: u32, owner: u32, euid: u32) -> Result<(), PrivateFileError> {
    if SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(PrivateFileError::NotAFile);
    }
    if owner != 0 && owner != euid {
        return Err(PrivateFileError::Owner { owner, euid });
    }
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Mode {
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

impl KeyError {
    fn private(path: &Path, from: &'static str, e: PrivateFileError) -> KeyError {
        let path = path.to_path_buf();
        match e {
            PrivateFileError::Open(source) => KeyError::Open { path, from, source },
            PrivateFileError::NotAFile => KeyError::NotAFile { path, from },
            PrivateFileError::Owner { owner, euid } => KeyError::Owner {
                path,
                from,
                owner,
                euid,
            },
            PrivateFileError::Mode { mode } => KeyError::Mode { path, from, mode },
        }
    }
}

/// Read and check the key file at `path`; `from` says where the path came
/// from (`--store-key-file`, `UNBAKED_STORE_KEY_FILE`, ...) for messages.
pub fn load(path: &Path, from: &'static str) -> Result<StoreKey, KeyError> {
    let mut file = open_private(path).map_err(|e| KeyError::private(path, from, e))?;
    // 64 hex digits and a newline; a little slack to say "too long".
    let mut text = Zeroizing::new(Vec::with_capacity(80));
    (&mut file)
        .take(80)
        .read_to_end(&mut text)
        .map_err(|e| KeyError::private(path, from, PrivateFileError::Open(e)))?;
    parse(&text).ok_or_else(|| KeyError::Format {
        path: path.into(),
        from,
    })
}

/// The judgement on the key file's `fstat`, pure.
pub fn check_meta(
    path: &Path,
    from: &'static str,
    mode: u32,
    owner: u32,
    euid: u32,
) -> Result<(), KeyError> {
    judge_meta(mode, owner, euid).map_err(|e| KeyError::private(path, from, e))
}

/// 64 hex digits, then at most one newline.
fn parse(text: &[u8]) -> Option<StoreKey> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text.len() != KEY_LEN * 2 {
        return None;
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        key[i] = (hi * 16 + lo) as u8;
    }
    Some(StoreKey(key))
}

/// `unbaked store init-key FILE`: a new random key, mode 0400, created
/// with `O_EXCL|O_NOFOLLOW` (never over an existing file or through a link
/// someone placed there), synced before it is reported written.
pub fn init(path: &Path) -> Result<(), KeyError> {
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(&mut raw[..])
        .map_err(|_| KeyError::Random)?;
    let mut text = Zeroizing::new(Vec::with_capacity(KEY_LEN * 2 + 1));
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in raw.iter() {
        text.push(HEX[usize::from(b >> 4)]);
        text.push(HEX[usize::from(b & 15)]);
    }
    text.push(b'\n');
    let write = |source| KeyError::Write {
        path: path.into(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists { path: path.into() },
            _ => write(e),
        })?;
    let done = file.write_all(&text).and_then(|()| file.sync_all());
    if let Err(e) = done {
        // Half a key is no key: leave nothing that looks like one.
        let _ = std::fs::remove_file(path);
        return Err(write(e));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_key_loads_and_a_loose_or_odd_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        init(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o400);
        let a = load(&path, "test").unwrap();
        assert!(matches!(init(&path), Err(KeyError::Exists { .. })));
        assert_eq!(load(&path, "test").unwrap().bytes(), a.bytes());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        let e = load(&path, "test").err().unwrap();
        assert!(matches!(e, KeyError::Mode { mode: 0o440, .. }), "{e}");
        assert!(e.to_string().contains("chmod 0400"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(&path, "test").is_ok());

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            load(&link, "test"),
            Err(KeyError::NotAFile { .. })
        ));
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd\n").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o400)).unwrap();
        let e = load(&short, "test").err().unwrap();
        assert!(matches!(e, KeyError::Format { .. }), "{e}");
        let missing = load(&dir.path().join("none"), "--store-key-file")
            .err()
            .unwrap()
            .to_string();
        assert!(
            missing.contains("--store-key-file") && missing.contains("init-key"),
            "{missing}"
        );
    }

    #[test]
    fn the_owner_must_be_root_or_the_broker() {
        let p = Path::new("/k");
        let reg = SFlag::S_IFREG.bits() | 0o400;
        assert!(check_meta(p, "t", reg, 0, 1000).is_ok());
        assert!(check_meta(p, "t", reg, 1000, 1000).is_ok());
        assert!(matches!(
            check_meta(p, "t", reg, 1001, 1000),
            Err(KeyError::Owner { owner: 1001, .. })
        ));
        assert!(matches!(
            check_meta(p, "t", SFlag::S_IFDIR.bits() | 0o700, 0, 0),
            Err(KeyError::NotAFile { .. })
        ));
    }

    #[test]
    fn hex_with_or_without_a_newline() {
        let hex = "00ff".repeat(16);
        assert_eq!(parse(hex.as_bytes()).unwrap().bytes()[..2], [0, 255]);
        assert!(parse(format!("{hex}\n").as_bytes()).is_some());
        assert!(parse(format!("{hex}\n\n").as_bytes()).is_none());
        assert!(parse(hex.replace('f', "g").as_bytes()).is_none());
    }
}
