//! An instance's KEK wherever it is: the file `kek.key`, or the HSM `kek.pkcs11` names
//! (docs/keys.md). Besides rotating within one provider, `keys rotate-kek --to-pkcs11 F` and
//! `--to-file` move the KEK from one provider to the other with the same crash-safe steps
//! (stage the next KEK, rewrap the key store, record the events, promote): a migration is
//! staged as `kek.pkcs11.next` (the target HSM) or `kek.key.next` (the target file) beside
//! the current one, and every step of the promotion leaves what the next open can finish.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::kek::{KekError, KekFile, KekProvider, KekSource, shred};
use super::pkcs11::{Pkcs11Config, Pkcs11Source};

/// Where `keys rotate-kek` puts the next KEK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KekTarget {
    /// A KEK file, `kek.key`.
    File,
    /// A token.
    Pkcs11(Pkcs11Config),
}

/// The KEK source of an instance: `kek.key`, or the HSM `kek.pkcs11` names.
#[derive(Debug)]
pub struct InstanceKek {
    file: PathBuf,
}

impl InstanceKek {
    /// The instance whose KEK file is (or would be) `kek_file`; `kek.pkcs11` sits beside it.
    pub fn new(kek_file: &Path) -> Self {
        InstanceKek {
            file: kek_file.to_owned(),
        }
    }

    fn hsm(&self) -> PathBuf {
        self.file.with_extension("pkcs11")
    }

    fn hsm_next(&self) -> PathBuf {
        self.file.with_extension("pkcs11.next")
    }

    fn file_next(&self) -> PathBuf {
        let mut name = self.file.as_os_str().to_owned();
        name.push(".next");
        PathBuf::from(name)
    }

    fn kek_file(&self) -> KekFile {
        KekFile::new(&self.file)
    }

    /// The HSM of `kek.pkcs11` (or of `path`).
    fn token(path: &Path) -> Result<Pkcs11Source, KekError> {
        Pkcs11Source::open(Pkcs11Config::load(path)?)
    }

    /// Whether the current KEK is in an HSM.
    pub fn in_hsm(&self) -> bool {
        self.hsm().exists()
    }
}

impl KekSource for InstanceKek {
    /// Stages the next KEK in `target` (the current provider's own rotation, or a move).
    fn stage_next_to(&self, target: &KekTarget) -> Result<Box<dyn KekProvider>, KekError> {
        match (target, self.in_hsm()) {
            // Into a file from either: the next KEK is staged as kek.key.next.
            (KekTarget::File, _) => self.kek_file().stage_next(),
            (KekTarget::Pkcs11(config), false) => {
                if self.hsm_next().exists() {
                    return Err(KekError::AlreadyStaged(self.hsm_next()));
                }
                let source = Pkcs11Source::open(config.clone())?;
                let next = source.stage_next()?;
                if let Err(e) = config.save(&self.hsm_next()) {
                    source.discard()?;
                    return Err(e);
                }
                Ok(next)
            }
            (KekTarget::Pkcs11(config), true) => {
                let current = Pkcs11Config::load(&self.hsm())?;
                if &current != config {
                    return Err(KekError::OtherHsm);
                }
                Self::token(&self.hsm())?.stage_next()
            }
        }
    }

    fn load(&self) -> Result<Box<dyn KekProvider>, KekError> {
        if !self.in_hsm() {
            return self.kek_file().load();
        }
        // A KEK file a finished move to the HSM left behind (a crash before its shredding).
        if self.file.exists() && !self.file_next().exists() && !self.hsm_next().exists() {
            tracing::warn!(file = %self.file.display(), "shredding the KEK file a move to the HSM left");
            shred(&self.file)?;
        }
        Self::token(&self.hsm())?.load()
    }

    fn stage_next(&self) -> Result<Box<dyn KekProvider>, KekError> {
        if self.in_hsm() {
            Self::token(&self.hsm())?.stage_next()
        } else {
            self.kek_file().stage_next()
        }
    }

    fn staged(&self) -> Result<Option<Box<dyn KekProvider>>, KekError> {
        if self.hsm_next().exists() {
            return Self::token(&self.hsm_next())?.staged();
        }
        if self.file_next().exists() || !self.in_hsm() {
            return self.kek_file().staged();
        }
        Self::token(&self.hsm())?.staged()
    }

    fn promote(&self) -> Result<(), KekError> {
        if self.hsm_next().exists() {
            // To the HSM: the target becomes the instance's, then its object the current
            // one, then the file is shredded. A crash after any step is finished at open.
            std::fs::rename(self.hsm_next(), self.hsm()).map_err(|error| KekError::Io {
                path: self.hsm(),
                error,
            })?;
        }
        if self.in_hsm() && self.file_next().exists() {
            // To a file: the HSM object goes first, then the HSM configuration, then the
            // staged file becomes `kek.key`.
            Self::token(&self.hsm())?.destroy_current()?;
            std::fs::remove_file(self.hsm()).map_err(|error| KekError::Io {
                path: self.hsm(),
                error,
            })?;
            return self.kek_file().promote();
        }
        if self.in_hsm() {
            Self::token(&self.hsm())?.promote()?;
            if self.file.exists() {
                shred(&self.file)?;
            }
            return Ok(());
        }
        self.kek_file().promote()
    }

    fn discard(&self) -> Result<(), KekError> {
        if self.hsm_next().exists() {
            Self::token(&self.hsm_next())?.discard()?;
            return std::fs::remove_file(self.hsm_next()).map_err(|error| KekError::Io {
                path: self.hsm_next(),
                error,
            });
        }
        if self.file_next().exists() || !self.in_hsm() {
            return self.kek_file().discard();
        }
        Self::token(&self.hsm())?.discard()
    }
}
