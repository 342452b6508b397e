//! C2SP signed notes (signed-note), checkpoints (tlog-checkpoint) and verifier keys (vkey).
//!
//! Only verification lives here; signing needs a secret and lives in `crypto`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, UnparsedPublicKey};

use super::hash::Hash;

/// Signature type byte of Ed25519 keys in C2SP signed-note.
pub const ALG_ED25519: u8 = 0x01;
/// Signature type byte of Ed25519 cosigner keys (C2SP tlog-cosignature, `cosignature/v1`).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Largest cosignature timestamp C2SP allows (2^63 − 1).
pub const MAX_COSIGNATURE_TIME: u64 = i64::MAX as u64;
/// The em dash that starts every signature line.
pub const SIG_PREFIX: &str = "\u{2014} ";
/// Most signature lines a note may carry.
pub const MAX_SIGNATURES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
/// Why a note, key or checkpoint body is refused, or a signature does not verify.
pub enum NoteError {
    #[error("malformed note: {0}")]
    /// The note's framing is wrong (what is wrong).
    Malformed(&'static str),
    #[error("malformed verifier key: {0}")]
    /// A verifier key does not parse (what is wrong).
    BadKey(&'static str),
    #[error("malformed checkpoint body: {0}")]
    /// The checkpoint body is not origin, size and root (what is wrong).
    BadCheckpoint(&'static str),
    #[error("no signature by a trusted key")]
    /// No signature line by a trusted key.
    NoTrustedSignature,
    #[error("signature by {0} does not verify")]
    /// A line by a trusted key (named) does not verify.
    BadSignature(String),
    #[error("checkpoint origin {got} is not the expected {want}")]
    /// The checkpoint names another origin than its key.
    WrongOrigin {
        /// The key's origin.
        want: String,
        /// The checkpoint's origin.
        got: String,
    },
    #[error("key {0} is of the wrong type for this check")]
    /// A key (named) of the wrong type: a checkpoint key where a cosigner is needed, or the
    /// reverse.
    WrongKeyType(String),
}

/// A key name is non-empty and has no whitespace and no `+`.
fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// C2SP key ID of an Ed25519 key: `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ pubkey)[:4]`.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    typed_key_id(ALG_ED25519, name, public_key)
}

/// `SHA-256(name ‖ 0x0A ‖ type ‖ pubkey)[:4]`, for either key type.
fn typed_key_id(alg: u8, name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let h = Hash::digest(&[name.as_bytes(), b"\n", &[alg], public_key]);
    let mut id = [0u8; 4];
    id.copy_from_slice(&h.as_bytes()[..4]);
    id
}

/// The message an Ed25519 `cosignature/v1` signs: two header lines, then the note text.
pub fn cosigned_message(timestamp: u64, text: &str) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{text}")
}

/// A verifier key: the name a note is signed under, its type (0x01 note signer, 0x04
/// cosigner) and its Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    alg: u8,
    id: [u8; 4],
    public_key: [u8; 32],
}

impl VerifierKey {
    /// An Ed25519 note-signing key (type 0x01), as checkpoints are signed with.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        Self::typed(ALG_ED25519, name, public_key)
    }

    /// An Ed25519 cosigner key (type 0x04, C2SP tlog-cosignature).
    pub fn new_cosigner(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        Self::typed(ALG_COSIGNATURE_V1, name, public_key)
    }

    fn typed(alg: u8, name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::BadKey(
                "name must be non-empty, without spaces or '+'",
            ));
        }
        Ok(VerifierKey {
            id: typed_key_id(alg, name, &public_key),
            name: name.to_owned(),
            alg,
            public_key,
        })
    }

    /// True for a cosigner key (type 0x04).
    pub fn is_cosigner(&self) -> bool {
        self.alg == ALG_COSIGNATURE_V1
    }

    /// Parses `<name>+<hex key id>+<base64(type ‖ pubkey)>`, checking the key id. The type
    /// is 0x01 (note signer) or 0x04 (cosigner).
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected name+keyid+key"));
        };
        if hex.len() != 8 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(NoteError::BadKey("key id must be 8 lowercase hex digits"));
        }
        let raw = B64
            .decode(b64)
            .map_err(|_| NoteError::BadKey("key is not base64"))?;
        let Some((&alg, key)) = raw.split_first() else {
            return Err(NoteError::BadKey("empty key"));
        };
        if alg != ALG_ED25519 && alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::BadKey(
                "only Ed25519 note (0x01) and cosigner (0x04) keys are supported",
            ));
        }
        let public_key: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::BadKey("Ed25519 key must be 32 bytes"))?;
        let vk = VerifierKey::typed(alg, name, public_key)?;
        if hex_id(&vk.id) != hex {
            return Err(NoteError::BadKey("key id does not match name and key"));
        }
        Ok(vk)
    }

    /// The key name (a checkpoint key's is the log origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id of C2SP signed-note.
    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The vkey text form.
    pub fn to_text(&self) -> String {
        let mut raw = vec![self.alg];
        raw.extend_from_slice(&self.public_key);
        format!("{}+{}+{}", self.name, hex_id(&self.id), B64.encode(raw))
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(msg, sig)
            .is_ok()
    }
}

fn hex_id(id: &[u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The signer's key name.
    pub name: String,
    /// The signer's key id.
    pub key_id: [u8; 4],
    /// Signature bytes after the key ID (64 for Ed25519; other types are kept opaque).
    pub signature: Vec<u8>,
}

impl Signature {
    /// The signature line as it stands in a note (with its newline).
    pub fn line(&self) -> String {
        let mut raw = self.key_id.to_vec();
        raw.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(raw))
    }
}

/// A parsed signed note: text (ending in a newline) and its signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// The signature lines, in note order.
    pub signatures: Vec<Signature>,
}

impl SignedNote {
    /// Parses a note strictly: text lines of printable UTF-8, a blank line, then 1 to 16
    /// signature lines, each ending in a newline.
    pub fn parse(note: &str) -> Result<Self, NoteError> {
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::Malformed("control character"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let text = note.get(..=split).ok_or(NoteError::Malformed("no text"))?;
        let sigs = note
            .get(split + 2..)
            .ok_or(NoteError::Malformed("no signatures"))?;
        if text.contains("\n\n") || text.starts_with('\n') {
            return Err(NoteError::Malformed("blank line inside the text"));
        }
        if !sigs.ends_with('\n') {
            return Err(NoteError::Malformed(
                "signature block must end with a newline",
            ));
        }
        let mut signatures = Vec::new();
        for line in sigs.split_terminator('\n') {
            let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
                "signature line must start with an em dash",
            ))?;
            let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed(
                "signature line needs a name and a signature",
            ))?;
            if !valid_key_name(name) {
                return Err(NoteError::Malformed("bad key name in a signature line"));
            }
            let raw = B64
                .decode(b64)
                .map_err(|_| NoteError::Malformed("signature is not base64"))?;
            if raw.len() < 5 {
                return Err(NoteError::Malformed("signature too short"));
            }
            let (id, sig) = raw.split_at(4);
            let mut key_id = [0u8; 4];
            key_id.copy_from_slice(id);
            signatures.push(Signature {
                name: name.to_owned(),
                key_id,
                signature: sig.to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(NoteError::Malformed("no signatures"));
        }
        if signatures.len() > MAX_SIGNATURES {
            return Err(NoteError::Malformed("too many signatures"));
        }
        Ok(SignedNote {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The note: text, a blank line, the signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
        }
        out
    }

    /// Verifies that a signature by `key` is present and valid. Signatures by other keys are
    /// ignored, as C2SP requires; a signature that claims `key` but fails is an error.
    pub fn verify(&self, key: &VerifierKey) -> Result<(), NoteError> {
        if key.alg != ALG_ED25519 {
            return Err(NoteError::WrongKeyType(key.name.clone()));
        }
        let mut found = false;
        for s in &self.signatures {
            if s.name == key.name && s.key_id == key.id {
                if !key.verify(self.text.as_bytes(), &s.signature) {
                    return Err(NoteError::BadSignature(key.name.clone()));
                }
                found = true;
            }
        }
        if found {
            Ok(())
        } else {
            Err(NoteError::NoTrustedSignature)
        }
    }
}

/// The first of `keys` that `note` has a signature line by (same name and key id), if any:
/// which pinned key to verify a note with when several are pinned (a signing-key rotation).
pub fn key_for<'a>(note: &str, keys: &'a [VerifierKey]) -> Option<&'a VerifierKey> {
    let parsed = SignedNote::parse(note).ok()?;
    keys.iter().find(|k| {
        parsed
            .signatures
            .iter()
            .any(|s| s.name == k.name && s.key_id == k.id)
    })
}

impl SignedNote {
    /// Verifies a `cosignature/v1` by the cosigner `key` and returns its timestamp. As with
    /// [`SignedNote::verify`], lines by other keys are ignored and a line that claims `key`
    /// but fails is an error; with several valid lines the latest timestamp is returned.
    pub fn verify_cosignature(&self, key: &VerifierKey) -> Result<u64, NoteError> {
        if key.alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::WrongKeyType(key.name.clone()));
        }
        let mut latest = None;
        for s in &self.signatures {
            if s.name != key.name || s.key_id != key.id {
                continue;
            }
            let bad = || NoteError::BadSignature(key.name.clone());
            let (time, sig) = s.signature.split_at_checked(8).ok_or_else(bad)?;
            let time = u64::from_be_bytes(time.try_into().map_err(|_| bad())?);
            if sig.len() != 64
                || time > MAX_COSIGNATURE_TIME
                || !key.verify(cosigned_message(time, &self.text).as_bytes(), sig)
            {
                return Err(bad());
            }
            latest = latest.max(Some(time));
        }
        latest.ok_or(NoteError::NoTrustedSignature)
    }

    /// Adds the signature lines of `other` (a note with the same text) that this note does
    /// not have yet, keeping at most [`MAX_SIGNATURES`].
    pub fn merge(&mut self, other: &SignedNote) -> Result<(), NoteError> {
        if other.text != self.text {
            return Err(NoteError::Malformed("notes with different texts"));
        }
        for s in &other.signatures {
            if !self.signatures.contains(s) {
                if self.signatures.len() == MAX_SIGNATURES {
                    return Err(NoteError::Malformed("too many signatures"));
                }
                self.signatures.push(s.clone());
            }
        }
        Ok(())
    }
}

/// The body of a tlog-checkpoint: origin, tree size, root. kukaku writes no extension lines
/// and rejects them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log origin.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The tree root at that size.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, one per line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        )
    }

    /// Parses a note text strictly (no extension lines).
    pub fn parse_body(text: &str) -> Result<Self, NoteError> {
        let mut lines = text.split_terminator('\n');
        let (Some(origin), Some(size), Some(root), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(NoteError::BadCheckpoint(
                "expected exactly origin, size, root lines",
            ));
        };
        if !text.ends_with('\n') {
            return Err(NoteError::BadCheckpoint("body must end with a newline"));
        }
        if origin.is_empty() || origin.chars().any(char::is_whitespace) {
            return Err(NoteError::BadCheckpoint(
                "origin must be non-empty without spaces",
            ));
        }
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(NoteError::BadCheckpoint(
                "size must be a decimal without leading zeros",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| NoteError::BadCheckpoint("size out of range"))?;
        let root = Hash::from_base64(root)
            .ok_or(NoteError::BadCheckpoint("root must be 32 bytes base64"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// Parses a signed checkpoint, verifies it with `key` and checks that its origin is the
    /// key's name (one key name per partition origin stops cross-partition replay).
    pub fn verify_note(note: &str, key: &VerifierKey) -> Result<Checkpoint, NoteError> {
        let parsed = SignedNote::parse(note)?;
        parsed.verify(key)?;
        let cp = Checkpoint::parse_body(&parsed.text)?;
        if cp.origin != key.name {
            return Err(NoteError::WrongOrigin {
                want: key.name.clone(),
                got: cp.origin,
            });
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From golang.org/x/mod sumdb/note (note_test.go / example_test.go), BSD-3-Clause.
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
        then you don't know what your problem is.\n\
        \n\
        \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    // From the C2SP signed-note specification's example.
    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn public_vectors_verify() {
        for (vkey, note) in [(PETER_VKEY, PETER_NOTE), (SPEC_VKEY, SPEC_NOTE)] {
            let key = VerifierKey::parse(vkey).unwrap();
            assert_eq!(key.to_text(), vkey);
            let n = SignedNote::parse(note).unwrap();
            assert_eq!(n.to_text(), note);
            n.verify(&key).unwrap();
        }
    }

    /// With several pinned keys, the one a note has a line by is chosen; a note by none of
    /// them, or no note at all, picks none.
    #[test]
    fn key_for_picks_the_pinned_key_a_note_names() {
        let peter = VerifierKey::parse(PETER_VKEY).unwrap();
        let spec = VerifierKey::parse(SPEC_VKEY).unwrap();
        let keys = [spec.clone(), peter.clone()];
        assert_eq!(key_for(PETER_NOTE, &keys), Some(&peter));
        assert_eq!(key_for(SPEC_NOTE, &keys), Some(&spec));
        assert_eq!(key_for(PETER_NOTE, &keys[..1]), None);
        assert_eq!(key_for("not a note", &keys), None);
    }

    #[test]
    fn every_single_byte_change_of_a_signed_note_is_rejected() {
        let key = VerifierKey::parse(PETER_VKEY).unwrap();
        let bytes = PETER_NOTE.as_bytes();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x20, 0x80] {
                let mut b = bytes.to_vec();
                b[i] ^= bit;
                let Ok(text) = std::str::from_utf8(&b) else {
                    continue;
                };
                let ok = SignedNote::parse(text).and_then(|n| n.verify(&key)).is_ok();
                assert!(!ok, "flip of byte {i} by {bit:#x} accepted");
            }
        }
    }

    #[test]
    fn mangled_vkeys_are_rejected() {
        let b = PETER_VKEY.as_bytes();
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = m[i].wrapping_add(1);
            if let Ok(t) = std::str::from_utf8(&m) {
                assert!(
                    VerifierKey::parse(t).is_err(),
                    "mangled at {i} accepted: {t}"
                );
            }
        }
        assert!(VerifierKey::parse(&PETER_VKEY[..PETER_VKEY.len() - 1]).is_err());
    }

    #[test]
    fn other_keys_are_ignored_but_needed() {
        let spec = VerifierKey::parse(SPEC_VKEY).unwrap();
        let n = SignedNote::parse(PETER_NOTE).unwrap();
        assert_eq!(n.verify(&spec), Err(NoteError::NoTrustedSignature));
    }

    /// The C2SP tlog-cosignature example: its witness line carries key ID, the timestamp of
    /// the spec's signed-message example (1679315147) and a 64-byte signature.
    #[test]
    fn spec_cosignature_example_parses() {
        let note = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\
            \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
            \u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
        let n = SignedNote::parse(note).unwrap();
        let w = &n.signatures[1];
        assert_eq!(w.name, "witness.example.com/w1");
        assert_eq!(w.signature.len(), 8 + 64);
        let time = u64::from_be_bytes(w.signature[..8].try_into().unwrap());
        assert_eq!(time, 1679315147);
        assert_eq!(
            cosigned_message(time, &n.text),
            "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n\
             CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
        // A cosigner key of another name is ignored, so nothing is trusted.
        let other = VerifierKey::new_cosigner("witness.example.com/w2", [9; 32]).unwrap();
        assert_eq!(
            n.verify_cosignature(&other),
            Err(NoteError::NoTrustedSignature)
        );
        // A cosigner key's vkey round-trips with type 0x04.
        assert_eq!(VerifierKey::parse(&other.to_text()).unwrap(), other);
        assert!(other.to_text().contains("+BAkJ"));
    }

    #[test]
    fn checkpoint_body_is_strict() {
        let cp = Checkpoint {
            origin: "hub.example/131011".into(),
            size: 12,
            root: Hash::from_bytes([3; 32]),
        };
        assert_eq!(Checkpoint::parse_body(&cp.body()), Ok(cp.clone()));
        for bad in [
            "hub.example/131011\n012\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n",
            "hub.example/131011\n12\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\next\n",
            "hub.example/131011\n12\nAwMD\n",
            "hub.example/131011\n12\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=",
            "\n12\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n",
            "hub.example/131011\n-1\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?} accepted");
        }
    }
}
