//! The KEK in an HSM (docs/keys.md, "The KEK in an HSM"): a non-extractable AES-256 key in a
//! PKCS#11 token, through the `cryptoki` crate. Keys are wrapped and unwrapped by the token
//! (AES-GCM in the token, with the same record layout and associated data as the file KEK,
//! docs/format.md §6), so the KEK never leaves it; its public fingerprint is the key object's
//! random `CKA_ID`. The PIN comes from a file (mode 0600) or an environment variable, never
//! from the command line or the instance's files.
//!
//! An instance uses the token when its home holds `kek.pkcs11` (a [`Pkcs11Config`], no
//! secret) instead of `kek.key`. The current KEK object is labelled `key_label`; a rotation
//! stages `<key_label>-next` and promotes it by destroying the old object and relabelling.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::kek::{KekError, KekProvider, KekSource, WRAP_VERSION, WRAPPED_LEN, WrapPurpose, aad};
use super::{Secret32, random};

/// Where the KEK lives in an HSM: written to `<home>/kek.pkcs11` (JSON, no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The token's PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The label of the current KEK object.
    pub key_label: String,
    /// A file holding the user PIN (mode 0600), or
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// the name of an environment variable holding it.
    #[serde(default)]
    pub pin_env: Option<String>,
}

/// Why the token could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    #[error("HSM configuration {0}")]
    Config(PathBuf, #[source] serde_json::Error),
    #[error("HSM configuration {path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("the HSM PIN file {0} is readable by others (mode {1:o}); chmod 600 it")]
    PinPermissions(PathBuf, u32),
    #[error("no HSM PIN: give pin_file or pin_env (the variable {0} is not set)")]
    NoPin(String),
    #[error("PKCS#11 ({what})")]
    Token {
        what: &'static str,
        #[source]
        error: cryptoki::error::Error,
    },
    #[error("no token labelled {0:?} in the PKCS#11 module")]
    NoToken(String),
    #[error("no KEK object labelled {0:?} in the token")]
    NoKey(String),
    #[error("the KEK object {0:?} has no 8-byte CKA_ID")]
    NoId(String),
}

fn token_err(what: &'static str) -> impl FnOnce(cryptoki::error::Error) -> KekError {
    move |error| KekError::Pkcs11(Box::new(Pkcs11Error::Token { what, error }))
}

impl Pkcs11Config {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self, KekError> {
        let bytes = std::fs::read(path).map_err(|error| {
            KekError::Pkcs11(Box::new(Pkcs11Error::Io {
                path: path.to_owned(),
                error,
            }))
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| KekError::Pkcs11(Box::new(Pkcs11Error::Config(path.to_owned(), e))))
    }

    /// Writes it (mode 0600; it holds no secret, but says where the KEK is).
    pub fn save(&self, path: &Path) -> Result<(), KekError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let io = |error| {
            KekError::Pkcs11(Box::new(Pkcs11Error::Io {
                path: path.to_owned(),
                error,
            }))
        };
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| KekError::Pkcs11(Box::new(Pkcs11Error::Config(path.to_owned(), e))))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// The user PIN, from the file (owner-only) or the environment.
    fn pin(&self) -> Result<AuthPin, KekError> {
        use std::os::unix::fs::PermissionsExt as _;
        let wrap = |e| KekError::Pkcs11(Box::new(e));
        if let Some(path) = &self.pin_file {
            let io = |error| {
                wrap(Pkcs11Error::Io {
                    path: path.clone(),
                    error,
                })
            };
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(wrap(Pkcs11Error::PinPermissions(
                    path.clone(),
                    mode & 0o777,
                )));
            }
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
            return Ok(AuthPin::from(text.trim().to_owned()));
        }
        let var = self.pin_env.clone().unwrap_or_default();
        match std::env::var(&var) {
            Ok(pin) if !var.is_empty() => Ok(AuthPin::from(pin)),
            _ => Err(wrap(Pkcs11Error::NoPin(var))),
        }
    }

    fn next_label(&self) -> String {
        format!("{}-next", self.key_label)
    }
}

/// A logged-in session with the token (one at a time: PKCS#11 sessions are not shared
/// between threads).
struct Token {
    session: Mutex<Session>,
    _context: Pkcs11,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token")
    }
}

/// The tokens this process has logged in to: a PKCS#11 module is initialized and logged in
/// once per process, so every user of one configuration shares one session.
static TOKENS: std::sync::Mutex<Vec<(Pkcs11Config, std::sync::Weak<Token>)>> =
    std::sync::Mutex::new(Vec::new());

impl Token {
    fn open(cfg: &Pkcs11Config) -> Result<Arc<Token>, KekError> {
        let mut tokens = TOKENS.lock().map_err(|_| KekError::BadRecord)?;
        tokens.retain(|(_, t)| t.strong_count() > 0);
        if let Some(t) = tokens
            .iter()
            .find(|(c, _)| c == cfg)
            .and_then(|(_, t)| t.upgrade())
        {
            return Ok(t);
        }
        let token = Token::login(cfg)?;
        tokens.push((cfg.clone(), Arc::downgrade(&token)));
        Ok(token)
    }

    fn login(cfg: &Pkcs11Config) -> Result<Arc<Token>, KekError> {
        let context = Pkcs11::new(&cfg.module).map_err(token_err("loading the module"))?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::CryptokiAlreadyInitialized,
                _,
            )) => {}
            Err(e) => return Err(token_err("initializing")(e)),
        }
        let slot = context
            .get_slots_with_token()
            .map_err(token_err("listing slots"))?
            .into_iter()
            .find(|s| {
                context
                    .get_token_info(*s)
                    .is_ok_and(|i| i.label().trim_end() == cfg.token)
            })
            .ok_or_else(|| KekError::Pkcs11(Box::new(Pkcs11Error::NoToken(cfg.token.clone()))))?;
        let session = context
            .open_rw_session(slot)
            .map_err(token_err("opening a session"))?;
        match session.login(UserType::User, Some(&cfg.pin()?)) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => return Err(token_err("logging in: the token refused the PIN")(e)),
        }
        Ok(Arc::new(Token {
            session: Mutex::new(session),
            _context: context,
        }))
    }

    fn with<T>(&self, f: impl FnOnce(&Session) -> Result<T, KekError>) -> Result<T, KekError> {
        let session = self.session.lock().map_err(|_| KekError::BadRecord)?;
        f(&session)
    }

    /// The secret key object labelled `label`, if any.
    fn find(&self, label: &str) -> Result<Option<ObjectHandle>, KekError> {
        self.with(|s| {
            let found = s
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .map_err(token_err("finding the KEK"))?;
            Ok(found.into_iter().next())
        })
    }

    fn id(&self, key: ObjectHandle, label: &str) -> Result<[u8; 8], KekError> {
        self.with(|s| {
            let attrs = s
                .get_attributes(key, &[AttributeType::Id])
                .map_err(token_err("reading the KEK's id"))?;
            attrs
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Id(id) => <[u8; 8]>::try_from(id.as_slice()).ok(),
                    _ => None,
                })
                .ok_or_else(|| KekError::Pkcs11(Box::new(Pkcs11Error::NoId(label.to_owned()))))
        })
    }

    /// A new AES-256 key that never leaves the token, with a random 8-byte id.
    fn generate(&self, label: &str) -> Result<ObjectHandle, KekError> {
        let id = random::<8>()?;
        self.with(|s| {
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::ValueLen(32usize.try_into().map_err(token_err("key length"))?),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(id.to_vec()),
                ],
            )
            .map_err(token_err("generating the KEK"))
        })
    }
}

/// A KEK object in a token.
#[derive(Debug)]
pub struct Pkcs11Kek {
    token: Arc<Token>,
    key: ObjectHandle,
    id: [u8; 8],
}

impl Pkcs11Kek {
    fn load(token: &Arc<Token>, label: &str) -> Result<Option<Self>, KekError> {
        let Some(key) = token.find(label)? else {
            return Ok(None);
        };
        Ok(Some(Pkcs11Kek {
            token: Arc::clone(token),
            key,
            id: token.id(key, label)?,
        }))
    }
}

impl KekProvider for Pkcs11Kek {
    fn fingerprint(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn wrap(
        &self,
        purpose: WrapPurpose,
        scope: &str,
        key_id: u32,
        key: &Secret32,
    ) -> Result<Vec<u8>, KekError> {
        let mut iv = random::<12>()?;
        let aad = aad(purpose, scope, key_id);
        let nonce = iv;
        let ct = self.token.with(|s| {
            let params = GcmParams::new(&mut iv, &aad, 128.into()).map_err(token_err("GCM"))?;
            s.encrypt(&Mechanism::AesGcm(params), self.key, key.expose())
                .map_err(token_err("wrapping a key"))
        })?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAP_VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        if out.len() != WRAPPED_LEN {
            return Err(KekError::BadRecord);
        }
        Ok(out)
    }

    fn unwrap_key(
        &self,
        purpose: WrapPurpose,
        scope: &str,
        key_id: u32,
        record: &[u8],
    ) -> Result<Secret32, KekError> {
        let (fp, rest) = match record.split_first() {
            Some((&WRAP_VERSION, body)) if record.len() == WRAPPED_LEN => {
                body.split_at_checked(8).ok_or(KekError::BadRecord)?
            }
            _ => return Err(KekError::BadRecord),
        };
        if fp != self.id {
            return Err(KekError::WrongKek {
                expected: fp.iter().map(|b| format!("{b:02x}")).collect(),
                loaded: self.fingerprint(),
            });
        }
        let (nonce, ct) = rest.split_at_checked(12).ok_or(KekError::BadRecord)?;
        let mut iv = <[u8; 12]>::try_from(nonce).map_err(|_| KekError::BadRecord)?;
        let aad = aad(purpose, scope, key_id);
        let plain = Zeroizing::new(self.token.with(|s| {
            let params = GcmParams::new(&mut iv, &aad, 128.into()).map_err(token_err("GCM"))?;
            s.decrypt(&Mechanism::AesGcm(params), self.key, ct)
                .map_err(|_| KekError::Unwrap)
        })?);
        if plain.len() != 32 {
            return Err(KekError::Unwrap);
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&plain);
        Ok(Secret32::from_bytes(bytes))
    }
}

/// An instance's KEK in a token: the current object and, during a rotation, the next.
#[derive(Debug)]
pub struct Pkcs11Source {
    config: Pkcs11Config,
    token: Arc<Token>,
}

impl Pkcs11Source {
    /// Logs in to the token the configuration names.
    pub fn open(config: Pkcs11Config) -> Result<Self, KekError> {
        let token = Token::open(&config)?;
        Ok(Pkcs11Source { config, token })
    }

    /// Creates the first KEK of a new instance in the token (refused if one exists).
    pub fn create(&self) -> Result<Box<dyn KekProvider>, KekError> {
        if self.token.find(&self.config.key_label)?.is_some() {
            return Err(KekError::AlreadyStaged(PathBuf::from(
                &self.config.key_label,
            )));
        }
        self.token.generate(&self.config.key_label)?;
        self.load()
    }
}

impl KekSource for Pkcs11Source {
    fn load(&self) -> Result<Box<dyn KekProvider>, KekError> {
        let label = &self.config.key_label;
        Pkcs11Kek::load(&self.token, label)?
            .map(|k| Box::new(k) as Box<dyn KekProvider>)
            .ok_or_else(|| KekError::Pkcs11(Box::new(Pkcs11Error::NoKey(label.clone()))))
    }

    fn stage_next(&self) -> Result<Box<dyn KekProvider>, KekError> {
        let label = self.config.next_label();
        if self.token.find(&label)?.is_some() {
            return Err(KekError::AlreadyStaged(PathBuf::from(label)));
        }
        self.token.generate(&label)?;
        self.staged()?
            .ok_or_else(|| KekError::Pkcs11(Box::new(Pkcs11Error::NoKey(label))))
    }

    fn staged(&self) -> Result<Option<Box<dyn KekProvider>>, KekError> {
        Ok(Pkcs11Kek::load(&self.token, &self.config.next_label())?
            .map(|k| Box::new(k) as Box<dyn KekProvider>))
    }

    fn promote(&self) -> Result<(), KekError> {
        let next = self.token.find(&self.config.next_label())?;
        let current = self.token.find(&self.config.key_label)?;
        self.token.with(|s| {
            if let Some(old) = current {
                s.destroy_object(old)
                    .map_err(token_err("destroying the old KEK"))?;
            }
            if let Some(next) = next {
                s.update_attributes(
                    next,
                    &[Attribute::Label(self.config.key_label.as_bytes().to_vec())],
                )
                .map_err(token_err("promoting the new KEK"))?;
            }
            Ok(())
        })
    }

    fn discard(&self) -> Result<(), KekError> {
        self.destroy(&self.config.next_label())
    }
}

impl Pkcs11Source {
    /// Destroys the current KEK object (the KEK moves to a file).
    pub fn destroy_current(&self) -> Result<(), KekError> {
        self.destroy(&self.config.key_label)
    }

    fn destroy(&self, label: &str) -> Result<(), KekError> {
        if let Some(next) = self.token.find(label)? {
            self.token.with(|s| {
                s.destroy_object(next)
                    .map_err(token_err("destroying a KEK object"))
            })?;
        }
        Ok(())
    }
}
