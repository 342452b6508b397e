//! Bearer credentials: a public id and a 256-bit secret. Only SHA-256 of the secret is stored;
//! a presented token is checked against it in constant time, and a successful check is the only
//! way to get a [`Verified`] credential, from which the API's typed scopes are minted.
//!
//! Token text: `kk1_` ‖ 16 hex digits of the id ‖ `_` ‖ 43 base64url digits of the secret
//! (docs/format.md §8).

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use zeroize::Zeroizing;

use super::scope::PartitionScope;
use super::{RngError, Secret32, random};
use crate::ledger::PartitionId;

const TOKEN_PREFIX: &str = "kk1_";
const HASH_DOMAIN: &[u8] = b"kukaku-credential-v1\n";

/// The public half of a token: names the credential in records and logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId([u8; 8]);

impl CredentialId {
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        CredentialId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    /// Parses the 16 lowercase hex digits of [`Display`](fmt::Display).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 16 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 8];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(CredentialId(out))
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialId({self})")
    }
}

/// Who a credential speaks for (docs/design.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A municipality or insurer terminal: one partition.
    Municipality,
    /// The prefecture's continuity job (flow 4): the partitions of one prefecture.
    ContinuityOperator,
    /// The intermediate server pulling the signed feed: a set of partitions.
    Replicator,
    /// The intermediate's ops-support environment (flow 5 exports): a set of partitions.
    OpsSupport,
    /// Headers, envelopes, checkpoints and proofs, never plaintext: a set or all partitions.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Municipality,
        Role::ContinuityOperator,
        Role::Replicator,
        Role::OpsSupport,
        Role::Auditor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Municipality => "municipality",
            Role::ContinuityOperator => "continuity-operator",
            Role::Replicator => "replicator",
            Role::OpsSupport => "ops-support",
            Role::Auditor => "auditor",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    pub fn code(self) -> u8 {
        match self {
            Role::Municipality => 1,
            Role::ContinuityOperator => 2,
            Role::Replicator => 3,
            Role::OpsSupport => 4,
            Role::Auditor => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a credential may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Exactly one partition.
    Partition(PartitionId),
    /// The partitions of one prefecture (2-digit code `01`–`47`).
    Prefecture(String),
    /// A listed set of partitions.
    Partitions(BTreeSet<PartitionId>),
    /// Every partition of the instance (auditors only).
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("a {role} credential needs {needs}")]
    ReachForRole { role: Role, needs: &'static str },
    #[error("prefecture must be a 2-digit code 01–47")]
    Prefecture,
    #[error("token is not a kukaku credential (expected kk1_<16 hex>_<43 base64url>)")]
    Malformed,
    #[error(transparent)]
    Rng(#[from] RngError),
}

impl Reach {
    /// Checks that the reach fits the role: one partition for a municipality, a prefecture for
    /// the continuity operator, a set for replicator and ops-support, a set or all for auditors.
    pub fn check_for(&self, role: Role) -> Result<(), CredentialError> {
        let ok = match (role, self) {
            (Role::Municipality, Reach::Partition(_)) => true,
            (Role::ContinuityOperator, Reach::Prefecture(p)) => {
                return valid_prefecture(p)
                    .then_some(())
                    .ok_or(CredentialError::Prefecture);
            }
            (Role::Replicator | Role::OpsSupport, Reach::Partitions(s)) => !s.is_empty(),
            (Role::Auditor, Reach::Partitions(s)) => !s.is_empty(),
            (Role::Auditor, Reach::All) => true,
            _ => false,
        };
        if ok {
            return Ok(());
        }
        Err(CredentialError::ReachForRole {
            role,
            needs: match role {
                Role::Municipality => "exactly one --partition",
                Role::ContinuityOperator => "--prefecture",
                Role::Replicator | Role::OpsSupport => "a non-empty --partitions list",
                Role::Auditor => "a non-empty --partitions list or --all",
            },
        })
    }
}

fn valid_prefecture(p: &str) -> bool {
    p.len() == 2 && p.parse::<u8>().is_ok_and(|n| (1..=47).contains(&n))
}

/// A bearer token: shown once at issue, then only its hash exists.
pub struct Token {
    id: CredentialId,
    secret: Secret32,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}, <redacted>)", self.id)
    }
}

impl Token {
    pub fn generate() -> Result<Token, RngError> {
        Ok(Token {
            id: CredentialId(random::<8>()?),
            secret: Secret32::generate()?,
        })
    }

    pub fn id(&self) -> CredentialId {
        self.id
    }

    /// The text to hand to the credential holder, once.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{TOKEN_PREFIX}{}_{}",
            self.id,
            URL_SAFE_NO_PAD.encode(self.secret.expose())
        ))
    }

    pub fn parse(text: &str) -> Result<Token, CredentialError> {
        let rest = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(CredentialError::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(CredentialError::Malformed)?;
        let id = CredentialId::parse(id).ok_or(CredentialError::Malformed)?;
        if secret.len() != 43 {
            return Err(CredentialError::Malformed);
        }
        let raw = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(secret)
                .map_err(|_| CredentialError::Malformed)?,
        );
        let secret = Secret32::from_slice(&raw).ok_or(CredentialError::Malformed)?;
        Ok(Token { id, secret })
    }

    /// SHA-256 over a domain tag and the secret: what the store keeps.
    pub fn secret_hash(&self) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(HASH_DOMAIN);
        ctx.update(self.secret.expose());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// A stored credential's fields, as the store reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: CredentialId,
    pub role: Role,
    pub reach: Reach,
    pub secret_hash: [u8; 32],
    pub label: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// 0 while not revoked.
    pub revoked_ms: u64,
    /// SHA-256 of the DER client certificate the credential is bound to (mTLS), if any.
    pub client_cert: Option<[u8; 32]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("unknown credential")]
    Unknown,
    #[error("wrong secret")]
    WrongSecret,
    #[error("credential revoked")]
    Revoked,
    #[error("credential expired")]
    Expired,
    #[error("credential is bound to a client certificate the connection did not present")]
    ClientCertificate,
}

/// A credential whose token matched its stored hash, unrevoked and unexpired at `now`.
#[derive(Debug, Clone)]
pub struct Verified {
    id: CredentialId,
    role: Role,
    reach: Reach,
    label: String,
}

/// Checks `token` against `stored` (constant-time hash comparison), then revocation, expiry
/// and, for a bound credential, the connection's client certificate (`peer_cert`: SHA-256 of
/// its DER).
pub fn verify(
    stored: &Stored,
    token: &Token,
    now_ms: u64,
    peer_cert: Option<&[u8; 32]>,
) -> Result<Verified, Refused> {
    use subtle::ConstantTimeEq;
    if stored.id != token.id {
        return Err(Refused::Unknown);
    }
    if !bool::from(stored.secret_hash.ct_eq(&token.secret_hash())) {
        return Err(Refused::WrongSecret);
    }
    if stored.revoked_ms != 0 {
        return Err(Refused::Revoked);
    }
    if now_ms >= stored.expires_ms {
        return Err(Refused::Expired);
    }
    if let Some(bound) = &stored.client_cert {
        let presented = peer_cert.ok_or(Refused::ClientCertificate)?;
        if !bool::from(bound.ct_eq(presented)) {
            return Err(Refused::ClientCertificate);
        }
    }
    Ok(Verified {
        id: stored.id,
        role: stored.role,
        reach: stored.reach.clone(),
        label: stored.label.clone(),
    })
}

impl Verified {
    pub fn id(&self) -> CredentialId {
        self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    /// The credential's label: for a clerk's credential, the person's display name, which
    /// a decision, an acknowledgement and a page record beside the credential id.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A municipality's scope: its one partition, from the credential and nowhere else.
    pub fn municipality_scope(&self) -> Option<PartitionScope> {
        match (self.role, &self.reach) {
            (Role::Municipality, Reach::Partition(p)) => Some(PartitionScope::new(p.clone())),
            _ => None,
        }
    }

    /// A continuity operator's scope: the prefecture of the credential.
    pub fn continuity_scope(&self) -> Option<super::scope::PrefectureScope> {
        match (self.role, &self.reach) {
            (Role::ContinuityOperator, Reach::Prefecture(code)) => {
                super::scope::PrefectureScope::new(code)
            }
            _ => None,
        }
    }

    /// A replicator's scope for `partition`, if it is in the credential's set.
    pub fn replicator_scope(&self, partition: &PartitionId) -> Option<PartitionScope> {
        match (self.role, &self.reach) {
            (Role::Replicator, Reach::Partitions(set)) if set.contains(partition) => {
                Some(PartitionScope::new(partition.clone()))
            }
            _ => None,
        }
    }

    /// An ops-support scope for `partition`, if it is in the credential's set.
    pub fn ops_support_scope(&self, partition: &PartitionId) -> Option<PartitionScope> {
        match (self.role, &self.reach) {
            (Role::OpsSupport, Reach::Partitions(set)) if set.contains(partition) => {
                Some(PartitionScope::new(partition.clone()))
            }
            _ => None,
        }
    }

    /// Whether an auditor (or any role with a set) may see headers of `partition`.
    pub fn reaches(&self, partition: &PartitionId) -> bool {
        match &self.reach {
            Reach::Partition(p) => p == partition,
            Reach::Partitions(set) => set.contains(partition),
            Reach::All => true,
            Reach::Prefecture(code) => crate::domain::InsurerNumber::parse(partition.as_str())
                .is_ok_and(|n| n.is_municipal_in(code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> PartitionId {
        PartitionId::parse(s).unwrap()
    }

    fn stored(token: &Token, role: Role, reach: Reach) -> Stored {
        Stored {
            id: token.id(),
            role,
            reach,
            secret_hash: token.secret_hash(),
            label: "t".into(),
            created_ms: 0,
            expires_ms: 1000,
            revoked_ms: 0,
            client_cert: None,
        }
    }

    #[test]
    fn token_text_round_trips_and_is_strict() {
        let t = Token::generate().unwrap();
        let text = t.to_text();
        assert_eq!(text.len(), 4 + 16 + 1 + 43);
        let back = Token::parse(&text).unwrap();
        assert_eq!(back.id(), t.id());
        assert_eq!(back.secret_hash(), t.secret_hash());
        assert!(!format!("{t:?}").contains(&text[21..]));
        for bad in [
            "",
            "kk1_",
            &text[..text.len() - 1],
            &format!("{}A", &*text),
            &text.replace("kk1_", "kk2_"),
            &text.to_uppercase(),
        ] {
            assert!(Token::parse(bad).is_err(), "{bad}");
        }
    }

    /// Known answer: the stored hash of an all-zero secret, from Python:
    /// `hashlib.sha256(b"kukaku-credential-v1\n" + bytes(32)).hexdigest()`.
    #[test]
    fn secret_hash_known_answer() {
        let t = Token::parse(&format!("kk1_0001020304050607_{}", "A".repeat(43))).unwrap();
        assert_eq!(t.id().to_string(), "0001020304050607");
        let got: String = t.secret_hash().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            got,
            "2c7c764b52b0bbd2d842ea90a113516ac492403a3f615f49a19fc8c691973b81"
        );
    }

    #[test]
    fn verify_checks_secret_revocation_expiry() {
        let t = Token::generate().unwrap();
        let other = Token::generate().unwrap();
        let p = pid("131011");
        let s = stored(&t, Role::Municipality, Reach::Partition(p.clone()));
        let v = verify(&s, &t, 999, None).unwrap();
        assert_eq!(v.municipality_scope().unwrap().partition(), &p);
        assert!(v.replicator_scope(&p).is_none());
        assert_eq!(verify(&s, &t, 1000, None).unwrap_err(), Refused::Expired);
        assert_eq!(verify(&s, &other, 0, None).unwrap_err(), Refused::Unknown);
        let forged = Token {
            id: t.id(),
            secret: Secret32::generate().unwrap(),
        };
        assert_eq!(
            verify(&s, &forged, 0, None).unwrap_err(),
            Refused::WrongSecret
        );
        let revoked = Stored {
            revoked_ms: 5,
            ..s.clone()
        };
        assert_eq!(verify(&revoked, &t, 0, None).unwrap_err(), Refused::Revoked);
        let bound = Stored {
            client_cert: Some([9; 32]),
            ..s.clone()
        };
        assert!(verify(&bound, &t, 0, Some(&[9; 32])).is_ok());
        assert_eq!(
            verify(&bound, &t, 0, None).unwrap_err(),
            Refused::ClientCertificate
        );
        assert_eq!(
            verify(&bound, &t, 0, Some(&[8; 32])).unwrap_err(),
            Refused::ClientCertificate
        );
    }

    #[test]
    fn reach_must_fit_the_role() {
        let p = pid("131011");
        let set: BTreeSet<_> = [p.clone()].into();
        assert!(
            Reach::Partition(p.clone())
                .check_for(Role::Municipality)
                .is_ok()
        );
        assert!(Reach::All.check_for(Role::Municipality).is_err());
        assert!(
            Reach::Partitions(set.clone())
                .check_for(Role::Municipality)
                .is_err()
        );
        assert!(
            Reach::Prefecture("13".into())
                .check_for(Role::ContinuityOperator)
                .is_ok()
        );
        assert!(
            Reach::Prefecture("48".into())
                .check_for(Role::ContinuityOperator)
                .is_err()
        );
        assert!(
            Reach::Partitions(set.clone())
                .check_for(Role::Replicator)
                .is_ok()
        );
        assert!(
            Reach::Partitions(BTreeSet::new())
                .check_for(Role::Replicator)
                .is_err()
        );
        assert!(Reach::All.check_for(Role::Replicator).is_err());
        assert!(Reach::All.check_for(Role::Auditor).is_ok());
    }

    #[test]
    fn prefecture_reach() {
        let t = Token::generate().unwrap();
        let s = stored(&t, Role::ContinuityOperator, Reach::Prefecture("13".into()));
        let v = verify(&s, &t, 0, None).unwrap();
        assert!(v.reaches(&pid("131011")));
        assert!(!v.reaches(&pid("380014")));
        assert!(!v.reaches(&pid("33130014")), "a 国保組合 of the prefecture");
        assert!(v.municipality_scope().is_none());
    }
}
