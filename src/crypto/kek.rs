//! The key-encryption key (KEK) and key wrapping (docs/format.md §6).

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use super::{RngError, Secret32, random};
use crate::ledger::{Hash, PartitionId};

/// First token of a KEK file.
const KEK_FILE_TAG: &str = "kukaku-kek-v1";
/// Version byte of a wrapped key record.
pub(crate) const WRAP_VERSION: u8 = 1;
/// `version ‖ kek fingerprint[8] ‖ nonce[12] ‖ ciphertext[32] ‖ tag[16]`.
pub const WRAPPED_LEN: usize = 1 + 8 + 12 + 32 + 16;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    /// The I/O error is part of the message, not a `source`, so it is printed once.
    #[error("KEK file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "KEK file {0} is readable by group or others (mode {1:o}); run `chmod 600` on it and check who copied it"
    )]
    Permissions(PathBuf, u32),
    #[error("KEK file {0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("KEK file {0} is malformed (expected `{KEK_FILE_TAG} <base64 of 32 bytes>`)")]
    Malformed(PathBuf),
    #[error("KEK file {0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    #[error(transparent)]
    Rng(#[from] RngError),
    #[error("wrong KEK: this key was wrapped under KEK {expected}, the loaded KEK is {loaded}")]
    WrongKek { expected: String, loaded: String },
    #[error("wrapped key record is malformed")]
    BadRecord,
    #[error("wrapped key does not unwrap: record altered or moved to another slot")]
    Unwrap,
    #[error("the KEK in the HSM")]
    Pkcs11(#[source] Box<super::pkcs11::Pkcs11Error>),
    #[error("this KEK source cannot move the KEK to another provider")]
    NoMove,
    #[error(
        "the KEK is in another HSM (kek.pkcs11 names another module, token or label): rotate within it, or move it to a file first"
    )]
    OtherHsm,
    #[error("a new KEK is already staged at {0}; finish or undo that rotation first")]
    AlreadyStaged(PathBuf),
}

/// What a wrapped key is for; enters the wrapping AAD so a key moved to another slot fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapPurpose {
    Dek,
    IndexKey,
    MatchingKey,
    SigningKey,
    WitnessKey,
    /// The HMAC key that authenticates credential records (issue 26).
    CredentialMac,
}

impl WrapPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            WrapPurpose::Dek => b"dek",
            WrapPurpose::IndexKey => b"index",
            WrapPurpose::MatchingKey => b"matching",
            WrapPurpose::SigningKey => b"signing",
            WrapPurpose::WitnessKey => b"witness",
            WrapPurpose::CredentialMac => b"credential-mac",
        }
    }
}

/// The instance KEK, loaded from a file provider (mode 0600). It wraps every other key.
#[derive(Debug)]
pub struct Kek {
    secret: Secret32,
    fingerprint: [u8; 8],
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KekError + '_ {
    move |error| KekError::Io {
        path: path.to_owned(),
        error,
    }
}

pub(crate) fn aad(purpose: WrapPurpose, scope: &str, key_id: u32) -> Vec<u8> {
    let label = purpose.label();
    let mut out = b"kukaku-wrap-v1".to_vec();
    out.push(label.len() as u8);
    out.extend_from_slice(label);
    out.push(scope.len() as u8);
    out.extend_from_slice(scope.as_bytes());
    out.extend_from_slice(&key_id.to_be_bytes());
    out
}

impl Kek {
    fn from_secret(secret: Secret32) -> Self {
        let h = Hash::digest(&[b"kukaku kek fingerprint v1", secret.expose()]);
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&h.as_bytes()[..8]);
        Kek {
            secret,
            fingerprint,
        }
    }

    /// A fresh KEK in memory (tests and benchmarks); `create_file` for real instances.
    pub fn generate() -> Result<Self, KekError> {
        Ok(Self::from_secret(Secret32::generate()?))
    }

    /// Creates a new KEK file with mode 0600. Refuses to overwrite.
    pub fn create_file(path: &Path) -> Result<Self, KekError> {
        let secret = Secret32::generate()?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    KekError::Exists(path.to_owned())
                } else {
                    KekError::Io {
                        path: path.to_owned(),
                        error: e,
                    }
                }
            })?;
        let line = Zeroizing::new(format!("{KEK_FILE_TAG} {}\n", B64.encode(secret.expose())));
        file.write_all(line.as_bytes()).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
        Ok(Self::from_secret(secret))
    }

    /// Loads a KEK file, refusing one that group or others can read.
    pub fn load_file(path: &Path) -> Result<Self, KekError> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if !meta.is_file() {
            return Err(KekError::NotAFile(path.to_owned()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KekError::Permissions(path.to_owned(), mode));
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err(path))?);
        let b64 = text
            .trim_end_matches('\n')
            .strip_prefix(KEK_FILE_TAG)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| KekError::Malformed(path.to_owned()))?;
        let raw = Zeroizing::new(
            B64.decode(b64)
                .map_err(|_| KekError::Malformed(path.to_owned()))?,
        );
        let secret =
            Secret32::from_slice(&raw).ok_or_else(|| KekError::Malformed(path.to_owned()))?;
        Ok(Self::from_secret(secret))
    }

    /// Public fingerprint (hex), stored with every wrapped key so a wrong KEK is named as such.
    pub fn fingerprint(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn cipher(&self) -> Result<Aes256Gcm, KekError> {
        Aes256Gcm::new_from_slice(self.secret.expose()).map_err(|_| KekError::BadRecord)
    }

    /// Wraps key material for `(purpose, scope, key_id)`; `scope` is a partition id, or a
    /// name such as `instance` or a prefecture code.
    pub fn wrap(
        &self,
        purpose: WrapPurpose,
        scope: &str,
        key_id: u32,
        key: &Secret32,
    ) -> Result<Vec<u8>, KekError> {
        let nonce = random::<12>()?;
        let aad = aad(purpose, scope, key_id);
        let ct = self
            .cipher()?
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.expose(),
                    aad: &aad,
                },
            )
            .map_err(|_| KekError::BadRecord)?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAP_VERSION);
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Unwraps a record made by [`Kek::wrap`] for the same slot.
    pub fn unwrap_key(
        &self,
        purpose: WrapPurpose,
        scope: &str,
        key_id: u32,
        record: &[u8],
    ) -> Result<Secret32, KekError> {
        if record.len() != WRAPPED_LEN {
            return Err(KekError::BadRecord);
        }
        let (version, rest) = record.split_at(1);
        if version != [WRAP_VERSION] {
            return Err(KekError::BadRecord);
        }
        let (fp, rest) = rest.split_at(8);
        if fp != self.fingerprint {
            return Err(KekError::WrongKek {
                expected: fp.iter().map(|b| format!("{b:02x}")).collect(),
                loaded: self.fingerprint(),
            });
        }
        let (nonce, ct) = rest.split_at(12);
        let aad = aad(purpose, scope, key_id);
        let plain = Zeroizing::new(
            self.cipher()?
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
                .map_err(|_| KekError::Unwrap)?,
        );
        Secret32::from_slice(&plain).ok_or(KekError::Unwrap)
    }
}

/// Something that wraps and unwraps keys under a KEK it never reveals: the file KEK
/// ([`Kek`]), or an HSM that keeps the KEK inside. The key store keeps only its output.
pub trait KekProvider: Send + Sync + std::fmt::Debug {
    /// Public fingerprint (16 hex digits), written into every wrapped record.
    fn fingerprint(&self) -> String;
    /// Wraps `key` for the slot `(purpose, scope, key_id)`.
    fn wrap(
        &self,
        purpose: WrapPurpose,
        scope: &str,
        key_id: u32,
        key: &Secret32,
    ) -> Result<Vec<u8>, KekError>;
    /// Unwraps a record made by [`KekProvider::wrap`] for the same slot.
    fn unwrap_key(
        &self,
        purpose: WrapPurpose,
        scope: &str,
        key_id: u32,
        record: &[u8],
    ) -> Result<Secret32, KekError>;
}

impl KekProvider for Kek {
    fn fingerprint(&self) -> String {
        Kek::fingerprint(self)
    }
    fn wrap(
        &self,
        purpose: WrapPurpose,
        scope: &str,
        key_id: u32,
        key: &Secret32,
    ) -> Result<Vec<u8>, KekError> {
        Kek::wrap(self, purpose, scope, key_id, key)
    }
    fn unwrap_key(
        &self,
        purpose: WrapPurpose,
        scope: &str,
        key_id: u32,
        record: &[u8],
    ) -> Result<Secret32, KekError> {
        Kek::unwrap_key(self, purpose, scope, key_id, record)
    }
}

/// The KEK fingerprint (hex) a wrapped record names, if it is a wrapped record at all.
pub fn record_fingerprint(record: &[u8]) -> Option<String> {
    if record.len() != WRAPPED_LEN || record.first() != Some(&WRAP_VERSION) {
        return None;
    }
    Some(
        record
            .get(1..9)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Where an instance's KEK lives and how it is replaced (`kukaku keys rotate-kek`): the
/// store stages a next KEK, rewraps every key under it, and only then promotes it, so a
/// crash at any point leaves one KEK that opens every wrapped key (docs/keys.md).
pub trait KekSource: Send + Sync + std::fmt::Debug {
    /// The current KEK.
    fn load(&self) -> Result<Box<dyn KekProvider>, KekError>;
    /// Creates a next KEK, durable before it is returned. Refuses while one is staged.
    fn stage_next(&self) -> Result<Box<dyn KekProvider>, KekError>;
    /// The staged next KEK, if a rotation was interrupted.
    fn staged(&self) -> Result<Option<Box<dyn KekProvider>>, KekError>;
    /// Makes the staged KEK the current one and destroys the old one.
    fn promote(&self) -> Result<(), KekError>;
    /// Destroys the staged KEK (the rotation never reached the key store).
    fn discard(&self) -> Result<(), KekError>;
    /// Stages the next KEK in another provider (a move between a file and an HSM).
    fn stage_next_to(
        &self,
        target: &super::instance_kek::KekTarget,
    ) -> Result<Box<dyn KekProvider>, KekError> {
        let _ = target;
        Err(KekError::NoMove)
    }
}

/// The file provider: `kek.key` (mode 0600), with the next KEK staged as `kek.key.next`.
#[derive(Debug, Clone)]
pub struct KekFile {
    path: PathBuf,
}

impl KekFile {
    pub fn new(path: &Path) -> Self {
        KekFile {
            path: path.to_owned(),
        }
    }

    fn next_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".next");
        PathBuf::from(name)
    }

    fn sync_dir(&self) -> Result<(), KekError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    }
}

/// Overwrites a key file with zeros (synced) and removes it. On copy-on-write or journaling
/// file systems old blocks may survive; docs/keys.md says what that means.
pub(crate) fn shred(path: &Path) -> Result<(), KekError> {
    let len = fs::metadata(path).map_err(io_err(path))?.len();
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(&vec![0u8; usize::try_from(len).unwrap_or(0)])
        .and_then(|()| f.sync_all())
        .map_err(io_err(path))?;
    fs::remove_file(path).map_err(io_err(path))
}

impl KekSource for KekFile {
    fn load(&self) -> Result<Box<dyn KekProvider>, KekError> {
        Ok(Box::new(Kek::load_file(&self.path)?))
    }

    fn stage_next(&self) -> Result<Box<dyn KekProvider>, KekError> {
        let next = self.next_path();
        let kek = Kek::create_file(&next).map_err(|e| match e {
            KekError::Exists(p) => KekError::AlreadyStaged(p),
            e => e,
        })?;
        self.sync_dir()?;
        Ok(Box::new(kek))
    }

    fn staged(&self) -> Result<Option<Box<dyn KekProvider>>, KekError> {
        let next = self.next_path();
        match Kek::load_file(&next) {
            Ok(k) => Ok(Some(Box::new(k))),
            Err(KekError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn promote(&self) -> Result<(), KekError> {
        let next = self.next_path();
        if self.path.exists() {
            shred(&self.path)?;
        }
        fs::rename(&next, &self.path).map_err(io_err(&next))?;
        self.sync_dir()
    }

    fn discard(&self) -> Result<(), KekError> {
        shred(&self.next_path())?;
        self.sync_dir()
    }
}

/// Wrapping scope name of a partition's keys.
pub fn partition_scope(p: &PartitionId) -> &str {
    p.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_binds_purpose_scope_and_id() {
        let kek = Kek::generate().unwrap();
        let dek = Secret32::generate().unwrap();
        let w = kek.wrap(WrapPurpose::Dek, "131011", 1, &dek).unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        let back = kek.unwrap_key(WrapPurpose::Dek, "131011", 1, &w).unwrap();
        assert_eq!(back.expose(), dek.expose());
        for (p, s, id) in [
            (WrapPurpose::IndexKey, "131011", 1),
            (WrapPurpose::Dek, "380014", 1),
            (WrapPurpose::Dek, "131011", 2),
        ] {
            assert!(matches!(
                kek.unwrap_key(p, s, id, &w),
                Err(KekError::Unwrap)
            ));
        }
        let other = Kek::generate().unwrap();
        let err = other
            .unwrap_key(WrapPurpose::Dek, "131011", 1, &w)
            .unwrap_err();
        assert!(matches!(err, KekError::WrongKek { .. }), "{err}");
        assert!(err.to_string().contains("wrong KEK"));
    }

    #[test]
    fn file_source_stages_promotes_and_discards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek.key");
        let old = Kek::create_file(&path).unwrap();
        let src = KekFile::new(&path);
        assert!(src.staged().unwrap().is_none());
        let next = src.stage_next().unwrap();
        assert_ne!(next.fingerprint(), old.fingerprint());
        assert!(matches!(src.stage_next(), Err(KekError::AlreadyStaged(_))));
        assert_eq!(
            src.staged().unwrap().unwrap().fingerprint(),
            next.fingerprint()
        );
        let w = next
            .wrap(
                WrapPurpose::Dek,
                "131011",
                1,
                &Secret32::generate().unwrap(),
            )
            .unwrap();
        assert_eq!(record_fingerprint(&w), Some(next.fingerprint()));
        assert_eq!(record_fingerprint(&w[1..]), None);
        src.promote().unwrap();
        assert_eq!(src.load().unwrap().fingerprint(), next.fingerprint());
        assert!(src.staged().unwrap().is_none());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A staged KEK that never reached the key store is destroyed, the current one kept.
        let third = src.stage_next().unwrap();
        src.discard().unwrap();
        assert!(src.staged().unwrap().is_none());
        assert_eq!(src.load().unwrap().fingerprint(), next.fingerprint());
        assert_ne!(third.fingerprint(), next.fingerprint());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn kek_file_is_0600_and_refused_when_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let kek = Kek::create_file(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            Kek::load_file(&path).unwrap().fingerprint(),
            kek.fingerprint()
        );
        assert!(matches!(Kek::create_file(&path), Err(KekError::Exists(_))));
        for bad in [0o640, 0o604, 0o644] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
            let err = Kek::load_file(&path).unwrap_err();
            assert!(
                matches!(err, KekError::Permissions(_, m) if m == bad),
                "{err}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(Kek::load_file(&path).is_ok());
        let text = fs::read_to_string(&path).unwrap();
        assert!(!format!("{kek:?}").contains(text.split(' ').nth(1).unwrap().trim()));
    }
}
