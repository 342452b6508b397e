//! Owner-only files: an instance's directories are 0700 and its files 0600, whatever the
//! umask of whoever started the process (issue 26). RocksDB creates its files (tables, WAL,
//! MANIFEST) with the process umask and has no option for their mode, so the store sets the
//! umask's group and other bits before it creates or opens anything; the process keeps that
//! umask. Open refuses a data directory, key store or home that group or others can enter,
//! as the KEK file's load refuses a wider mode, and tightens files an older version left
//! wider inside them.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Why an instance's files are not private.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateError {
    #[error(
        "{path} has mode {mode:04o}: group or others can enter it. Make it owner-only \
         (chmod 700 {path}) and check who may have read it"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateError + '_ {
    move |error| PrivateError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Adds group and other bits to the process umask: every file and directory created from
/// now on (RocksDB's included) is owner-only.
pub fn restrict_umask() {
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::from_raw_mode(0o077));
    rustix::process::umask(old | Mode::from_raw_mode(0o077));
}

/// Creates `dir` (and missing parents) as 0700.
pub fn create_dir(dir: &Path) -> Result<(), PrivateError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Refuses a directory group or others can enter or list.
pub fn check_dir(dir: &Path) -> Result<(), PrivateError> {
    let mode = std::fs::metadata(dir)
        .map_err(io(dir))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(PrivateError::TooOpen {
            path: dir.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Sets `path`'s permission bits to `mode`.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), PrivateError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

/// Sets every file directly in `dir` that group or others could read to 0600 (files made
/// before this version, or copied in). Returns how many were changed.
pub fn tighten_files(dir: &Path) -> Result<usize, PrivateError> {
    let mut changed = 0;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            set_mode(&path, 0o600)?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Keeps the process's memory (keys, plaintext) out of core files and away from other
/// processes of the same user: `RLIMIT_CORE` 0 (no core file) and `PR_SET_DUMPABLE` 0 (no
/// core dump, no ptrace attach by non-root, `/proc/PID/mem` and `environ` owned by root).
/// The binary calls it first thing.
pub fn harden_process() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_checked_and_files_tightened() -> Result<(), Box<dyn std::error::Error>> {
        let home = tempfile::tempdir()?;
        let dir = home.path().join("a/b");
        create_dir(&dir)?;
        assert_eq!(std::fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
        check_dir(&dir)?;
        for wide in [0o750, 0o705, 0o755, 0o777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(wide))?;
            assert!(
                matches!(check_dir(&dir), Err(PrivateError::TooOpen { mode, .. }) if mode == wide)
            );
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let file = dir.join("000001.log");
        std::fs::write(&file, b"x")?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        assert_eq!(tighten_files(&dir)?, 1);
        assert_eq!(
            std::fs::metadata(&file)?.permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(tighten_files(&dir)?, 0);
        Ok(())
    }

    #[test]
    fn a_hardened_process_dumps_no_core() -> Result<(), Box<dyn std::error::Error>> {
        harden_process()?;
        assert_eq!(
            rustix::process::dumpable_behavior()?,
            rustix::process::DumpableBehavior::NotDumpable
        );
        let core = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
        Ok(())
    }
}
