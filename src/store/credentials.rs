//! Credentials in the system CF: issue, list, revoke, authenticate. Only SHA-256 of a token's
//! secret is stored; every request reads the record again, so a revocation or an expiry takes
//! effect on the next request.

use std::collections::BTreeSet;

use super::engine::{Op, Space};
use super::records::{
    CREDENTIAL_MACS, CREDENTIAL_PREFIX, CredentialRecord, PartitionStatus, ReachRecord,
    credential_key, decode, encode,
};
use super::{Store, read_registry};
use crate::crypto::credential::{
    self, CredentialError, CredentialId, Reach, Refused, Role, Stored, Token, Verified,
};
use crate::ledger::PartitionId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialStoreError {
    #[error(transparent)]
    Invalid(#[from] CredentialError),
    #[error("partition {0} is not an active partition of this instance")]
    UnknownPartition(PartitionId),
    #[error("no credential {0}")]
    NotFound(CredentialId),
    #[error("credential {0} is already revoked")]
    AlreadyRevoked(CredentialId),
    #[error("expiry must be in the future")]
    Expiry,
    #[error("label must be 1–64 printable characters")]
    Label,
    #[error("stored credential record {0} is unreadable")]
    Corrupt(String),
    #[error("encoding a credential record")]
    Encode(#[source] bincode::error::EncodeError),
    #[error("reading the partition registry")]
    Registry(#[source] super::ProvisionError),
    #[error("storage")]
    Db(#[from] rocksdb::Error),
    #[error("the storage engine")]
    Engine(#[from] super::EngineError),
    #[error("credential MAC key")]
    Key(#[source] super::KeyError),
    /// The record's MAC does not verify: planted in a copy of `data/`, or damaged.
    #[error("credential record {0} fails its MAC (planted or damaged); refused")]
    Unauthenticated(CredentialId),
}

/// Length of a credential record's MAC.
const MAC_LEN: usize = 32;

/// Why a request's credential was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("credential store")]
    Store(#[from] CredentialStoreError),
}

fn to_record(s: &Stored) -> CredentialRecord {
    CredentialRecord {
        role: s.role.code(),
        reach: match &s.reach {
            Reach::Partition(p) => ReachRecord::Partition(p.as_str().to_owned()),
            Reach::Prefecture(code) => ReachRecord::Prefecture(code.clone()),
            Reach::Partitions(set) => {
                ReachRecord::Partitions(set.iter().map(|p| p.as_str().to_owned()).collect())
            }
            Reach::All => ReachRecord::All,
        },
        secret_hash: s.secret_hash,
        label: s.label.clone(),
        created_ms: s.created_ms,
        expires_ms: s.expires_ms,
        revoked_ms: s.revoked_ms,
        client_cert: s.client_cert,
    }
}

fn from_record(id: CredentialId, r: CredentialRecord) -> Option<Stored> {
    let reach = match r.reach {
        ReachRecord::Partition(p) => Reach::Partition(PartitionId::parse(&p).ok()?),
        ReachRecord::Prefecture(code) => Reach::Prefecture(code),
        ReachRecord::Partitions(list) => Reach::Partitions(
            list.iter()
                .map(|p| PartitionId::parse(p).ok())
                .collect::<Option<BTreeSet<_>>>()?,
        ),
        ReachRecord::All => Reach::All,
    };
    Some(Stored {
        id,
        role: Role::from_code(r.role)?,
        reach,
        secret_hash: r.secret_hash,
        label: r.label,
        created_ms: r.created_ms,
        expires_ms: r.expires_ms,
        revoked_ms: r.revoked_ms,
        client_cert: r.client_cert,
    })
}

impl Store {
    /// `HMAC(credential key, "credential-v1:" ‖ id ‖ record)`.
    fn credential_mac(
        &self,
        id: CredentialId,
        record: &[u8],
    ) -> Result<[u8; MAC_LEN], CredentialStoreError> {
        let key = self
            .inner
            .keyring
            .credential_key()
            .map_err(CredentialStoreError::Key)?;
        Ok(key.token_parts("credential-v1", &[id.as_bytes(), record]))
    }

    /// A stored value: its MAC checked (constant time), then decoded.
    fn open_credential(
        &self,
        id: CredentialId,
        raw: &[u8],
    ) -> Result<Stored, CredentialStoreError> {
        let at = raw
            .len()
            .checked_sub(MAC_LEN)
            .ok_or(CredentialStoreError::Unauthenticated(id))?;
        let (record, tag) = raw.split_at(at);
        let want = self.credential_mac(id, record)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&want[..], tag)) {
            return Err(CredentialStoreError::Unauthenticated(id));
        }
        decode::<CredentialRecord>(record)
            .and_then(|r| from_record(id, r))
            .ok_or_else(|| CredentialStoreError::Corrupt(id.to_string()))
    }

    /// At open: records written before credential MACs get theirs, once; afterwards a
    /// record without a valid MAC is refused wherever it is read.
    pub(crate) fn seal_legacy_credentials(&self) -> Result<usize, CredentialStoreError> {
        if self
            .inner
            .engine
            .get(&Space::System, CREDENTIAL_MACS)?
            .is_some()
        {
            return Ok(0);
        }
        let mut ops = Vec::new();
        for (id, mut value) in self.raw_credentials()? {
            if decode::<CredentialRecord>(&value).is_none() {
                return Err(CredentialStoreError::Corrupt(id.to_string()));
            }
            let mac = self.credential_mac(id, &value)?;
            value.extend_from_slice(&mac);
            ops.push(Op::Put {
                space: Space::System,
                key: credential_key(id.as_bytes()),
                value,
            });
        }
        let sealed = ops.len();
        ops.push(Op::Put {
            space: Space::System,
            key: CREDENTIAL_MACS.to_vec(),
            value: Vec::new(),
        });
        self.inner.engine.commit(ops)?;
        Ok(sealed)
    }

    fn put_credential(&self, s: &Stored) -> Result<(), CredentialStoreError> {
        let mut bytes = encode(&to_record(s)).map_err(CredentialStoreError::Encode)?;
        let mac = self.credential_mac(s.id, &bytes)?;
        bytes.extend_from_slice(&mac);
        self.inner.engine.commit(vec![Op::Put {
            space: Space::System,
            key: credential_key(s.id.as_bytes()),
            value: bytes,
        }])?;
        Ok(())
    }

    /// Issues a credential. Every partition it names must be active here. Returns the token,
    /// which exists nowhere else: print it once.
    pub fn issue_credential(
        &self,
        role: Role,
        reach: Reach,
        label: &str,
        expires_ms: u64,
    ) -> Result<(Token, Stored), CredentialStoreError> {
        self.issue_bound_credential(role, reach, label, expires_ms, None)
    }

    /// [`Store::issue_credential`], bound to a client certificate (SHA-256 of its DER): the
    /// token is then accepted only on a TLS connection that presented that certificate.
    pub fn issue_bound_credential(
        &self,
        role: Role,
        reach: Reach,
        label: &str,
        expires_ms: u64,
        client_cert: Option<[u8; 32]>,
    ) -> Result<(Token, Stored), CredentialStoreError> {
        reach.check_for(role)?;
        let now = self.inner.options.now_ms();
        if expires_ms <= now {
            return Err(CredentialStoreError::Expiry);
        }
        if label.is_empty() || label.chars().count() > 64 || label.chars().any(char::is_control) {
            return Err(CredentialStoreError::Label);
        }
        let active: BTreeSet<PartitionId> = read_registry(&*self.inner.engine)
            .map_err(CredentialStoreError::Registry)?
            .into_iter()
            .filter(|p| p.status == PartitionStatus::Active)
            .map(|p| p.partition)
            .collect();
        let named: Vec<&PartitionId> = match &reach {
            Reach::Partition(p) => vec![p],
            Reach::Partitions(set) => set.iter().collect(),
            Reach::Prefecture(_) | Reach::All => vec![],
        };
        if let Some(p) = named.into_iter().find(|p| !active.contains(*p)) {
            return Err(CredentialStoreError::UnknownPartition(p.clone()));
        }
        let token = Token::generate().map_err(CredentialError::from)?;
        let stored = Stored {
            id: token.id(),
            role,
            reach,
            secret_hash: token.secret_hash(),
            label: label.to_owned(),
            created_ms: now,
            expires_ms,
            revoked_ms: 0,
            client_cert,
        };
        self.put_credential(&stored)?;
        Ok((token, stored))
    }

    /// One credential by id.
    pub fn credential(&self, id: CredentialId) -> Result<Option<Stored>, CredentialStoreError> {
        let raw = self
            .inner
            .engine
            .get(&Space::System, &credential_key(id.as_bytes()))?;
        self.credential_from(id, raw)
    }

    /// The credential `id` from its stored record, if there is one.
    fn credential_from(
        &self,
        id: CredentialId,
        raw: Option<Vec<u8>>,
    ) -> Result<Option<Stored>, CredentialStoreError> {
        raw.map(|raw| self.open_credential(id, &raw)).transpose()
    }

    /// Every credential, revoked and expired ones included, in id order.
    pub fn credentials(&self) -> Result<Vec<Stored>, CredentialStoreError> {
        self.raw_credentials()?
            .into_iter()
            .map(|(id, raw)| self.open_credential(id, &raw))
            .collect()
    }

    /// Every credential record as stored, in id order.
    fn raw_credentials(&self) -> Result<Vec<(CredentialId, Vec<u8>)>, CredentialStoreError> {
        let mut out = Vec::new();
        for item in self
            .inner
            .engine
            .scan_prefix(&Space::System, CREDENTIAL_PREFIX)?
        {
            let (k, v) = item?;
            let Some(id) = k.strip_prefix(CREDENTIAL_PREFIX) else {
                break;
            };
            let id = <[u8; 8]>::try_from(id)
                .map(CredentialId::from_bytes)
                .map_err(|_| CredentialStoreError::Corrupt("credential key".into()))?;
            out.push((id, v.to_vec()));
        }
        Ok(out)
    }

    /// Revokes a credential; the next request with it is refused.
    pub fn revoke_credential(&self, id: CredentialId) -> Result<Stored, CredentialStoreError> {
        let mut stored = self
            .credential(id)?
            .ok_or(CredentialStoreError::NotFound(id))?;
        if stored.revoked_ms != 0 {
            return Err(CredentialStoreError::AlreadyRevoked(id));
        }
        stored.revoked_ms = self.inner.options.now_ms().max(1);
        self.put_credential(&stored)?;
        Ok(stored)
    }

    /// Checks a presented token: known id, matching secret (constant time), not revoked, not
    /// expired, and for a bound credential the connection's client certificate (`peer_cert`).
    pub fn authenticate(
        &self,
        token: &Token,
        peer_cert: Option<&[u8; 32]>,
    ) -> Result<Verified, AuthError> {
        self.authenticate_stored(token, peer_cert, self.credential(token.id()))
    }

    /// [`Store::authenticate`] from memory only (memtable and block cache, never a disk
    /// read): `None` when the answer needs a read from disk. So an async caller can check a
    /// token on its own thread and go to the blocking pool only then; the answer, when there
    /// is one, is the same.
    pub fn authenticate_in_memory(
        &self,
        token: &Token,
        peer_cert: Option<&[u8; 32]>,
    ) -> Option<Result<Verified, AuthError>> {
        let id = token.id();
        let raw = self
            .inner
            .engine
            .get_in_memory(&Space::System, &credential_key(id.as_bytes()))?;
        let stored = raw
            .map_err(CredentialStoreError::from)
            .and_then(|raw| self.credential_from(id, raw));
        Some(self.authenticate_stored(token, peer_cert, stored))
    }

    /// The answer for `token` given its stored credential (as read).
    fn authenticate_stored(
        &self,
        token: &Token,
        peer_cert: Option<&[u8; 32]>,
        stored: Result<Option<Stored>, CredentialStoreError>,
    ) -> Result<Verified, AuthError> {
        let stored = match stored {
            Ok(Some(s)) => s,
            Ok(None) => return Err(Refused::Unknown.into()),
            Err(CredentialStoreError::Unauthenticated(id)) => {
                tracing::error!(credential = %id, "credential record fails its MAC (planted or damaged); refused");
                return Err(Refused::Unknown.into());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(credential::verify(
            &stored,
            token,
            self.inner.options.now_ms(),
            peer_cert,
        )?)
    }
}
