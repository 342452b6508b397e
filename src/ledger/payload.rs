//! Payloads of open kinds (genesis, key events), readable by auditors without keys.
//!
//! They follow the header's encoding rules (fixed-width big-endian integers, length-prefixed
//! strings, one encoding per value) and can hold no `domain` type. docs/format.md §5.

use super::header::{HeaderError, Reader};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
/// Why an open payload does not decode, or is refused before it is written.
pub enum PayloadError {
    #[error("payload truncated or malformed")]
    /// The bytes end early or a length is wrong.
    Decode(#[from] HeaderError),
    #[error("unknown payload schema {0}")]
    /// A schema this build does not know.
    Schema(u16),
    #[error("unknown value {value} for {field}")]
    /// A code outside its field's values.
    Value {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    #[error("{0} is not valid text")]
    /// A text field (named) that is not valid UTF-8 or not ASCII where ASCII is required.
    Text(&'static str),
    #[error("{0} bytes left after the payload")]
    /// Bytes left after the payload (how many).
    Trailing(usize),
    #[error("{0} is too long")]
    /// A text field (named) longer than its length prefix allows.
    TooLong(&'static str),
    #[error("{field} contains a control character (character {at}); open payloads hold none")]
    /// A control character in a text field.
    Control {
        /// The field.
        field: &'static str,
        /// The character's position.
        at: usize,
    },
}

/// Refuses a control character in a text field of an open payload. The decoders refuse
/// them (a report must not be able to hide lines), so an encoder that wrote one would make
/// an entry no auditor can read: every text is checked here, before anything is written.
pub fn check_text(field: &'static str, s: &str) -> Result<(), PayloadError> {
    match s.chars().position(char::is_control) {
        Some(at) => Err(PayloadError::Control { field, at: at + 1 }),
        None => Ok(()),
    }
}

fn put_str8(out: &mut Vec<u8>, s: &str) -> Result<(), PayloadError> {
    check_text("short text", s)?;
    let len = u8::try_from(s.len()).map_err(|_| PayloadError::TooLong("short text"))?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_str16(out: &mut Vec<u8>, s: &str) -> Result<(), PayloadError> {
    check_text("text", s)?;
    put_bytes16(out, s)
}

/// A u16-length text whose decoder takes any UTF-8 (a signed note, whose lines end in LF).
fn put_bytes16(out: &mut Vec<u8>, s: &str) -> Result<(), PayloadError> {
    let len = u16::try_from(s.len()).map_err(|_| PayloadError::TooLong("text"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn get_str(r: &mut Reader<'_>, len: usize, field: &'static str) -> Result<String, PayloadError> {
    let bytes = r.take(len)?;
    let s = std::str::from_utf8(bytes).map_err(|_| PayloadError::Text(field))?;
    if s.chars().any(char::is_control) {
        return Err(PayloadError::Text(field));
    }
    Ok(s.to_owned())
}

fn finish(r: &Reader<'_>) -> Result<(), PayloadError> {
    match r.rest().len() {
        0 => Ok(()),
        n => Err(PayloadError::Trailing(n)),
    }
}

/// Payload of the genesis entry (seq 0): who created the partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    /// Instance origin, e.g. `hub.kokuho-13.example`.
    pub origin: String,
}

impl Genesis {
    /// The schema this build writes and reads.
    pub const SCHEMA: u16 = 1;

    /// The payload bytes (docs/format.md §5); refuses text an auditor could not read.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        let mut out = Self::SCHEMA.to_be_bytes().to_vec();
        put_str8(&mut out, &self.origin)?;
        Ok(out)
    }

    /// Decodes strictly: one encoding per payload, no trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader::new(bytes);
        let schema = r.u16()?;
        if schema != Self::SCHEMA {
            return Err(PayloadError::Schema(schema));
        }
        let len = usize::from(r.u8()?);
        let origin = get_str(&mut r, len, "origin")?;
        finish(&r)?;
        Ok(Genesis { origin })
    }
}

/// Retention class of a key scope (docs/design.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyClass {
    /// 資格 data kept for the partition's life: one epoch.
    Resident,
    /// Data kept for a period: one epoch per fiscal year of `tx_time`.
    Dated,
}

impl KeyClass {
    /// The code stored in key events and key records.
    pub fn code(self) -> u8 {
        match self {
            KeyClass::Resident => 1,
            KeyClass::Dated => 2,
        }
    }
    /// A known code, or `None`.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(KeyClass::Resident),
            2 => Some(KeyClass::Dated),
            _ => None,
        }
    }
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            KeyClass::Resident => "resident",
            KeyClass::Dated => "dated",
        }
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEventKind {
    /// First DEK version of a scope.
    Create,
    /// A new current version of a scope (nonce budget, time limit or operator).
    Rotate,
    /// Key material rewrapped under a new KEK.
    Rewrap,
    /// Re-encryption progress; `count` = entries moved so far.
    ReencryptProgress,
    /// Re-encryption done; `count` = entries moved.
    ReencryptDone,
    /// A version dropped after no entry uses it.
    Retire,
    /// Key material destroyed (crypto-shredding); `count` = entries made unreadable.
    Destroy,
    /// The instance checkpoint-signing key changed.
    SigningKey,
    /// The instance was restored from a backup older than a size auditors or witnesses had
    /// verified; `count` = the entries of that verified log the restore does not hold.
    Restore,
}

impl KeyEventKind {
    const ALL: [KeyEventKind; 9] = [
        KeyEventKind::Create,
        KeyEventKind::Rotate,
        KeyEventKind::Rewrap,
        KeyEventKind::ReencryptProgress,
        KeyEventKind::ReencryptDone,
        KeyEventKind::Retire,
        KeyEventKind::Destroy,
        KeyEventKind::SigningKey,
        KeyEventKind::Restore,
    ];
    /// The code stored in key events.
    pub fn code(self) -> u8 {
        match self {
            KeyEventKind::Create => 1,
            KeyEventKind::Rotate => 2,
            KeyEventKind::Rewrap => 3,
            KeyEventKind::ReencryptProgress => 4,
            KeyEventKind::ReencryptDone => 5,
            KeyEventKind::Retire => 6,
            KeyEventKind::Destroy => 7,
            KeyEventKind::SigningKey => 8,
            KeyEventKind::Restore => 9,
        }
    }
    /// A known code, or `None`.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.code() == code)
    }
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            KeyEventKind::Create => "create",
            KeyEventKind::Rotate => "rotate",
            KeyEventKind::Rewrap => "rewrap",
            KeyEventKind::ReencryptProgress => "reencrypt_progress",
            KeyEventKind::ReencryptDone => "reencrypt_done",
            KeyEventKind::Retire => "retire",
            KeyEventKind::Destroy => "destroy",
            KeyEventKind::SigningKey => "signing_key",
            KeyEventKind::Restore => "restore",
        }
    }
}

/// Payload of a key event entry (kind 0x0200). Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// What happened.
    pub event: KeyEventKind,
    /// Partition-local DEK id the event is about (0 for instance keys).
    pub key_id: u32,
    /// The key's retention class.
    pub class: KeyClass,
    /// 0 for `resident`, the fiscal year for `dated`.
    pub epoch: u16,
    /// Version within the scope, from 1.
    pub version: u32,
    /// Event-specific count (entries moved, entries made unreadable), else 0.
    pub count: u64,
    /// Who: `system`, `admin-cli`, or a credential id. ASCII, at most 255 bytes.
    pub actor: String,
    /// Why: reason or legal basis, UTF-8, at most 65,535 bytes.
    pub reason: String,
}

impl KeyEvent {
    /// The schema this build writes and reads.
    pub const SCHEMA: u16 = 1;

    /// The payload bytes (docs/format.md §5); refuses text an auditor could not read.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        let mut out = Self::SCHEMA.to_be_bytes().to_vec();
        out.push(self.event.code());
        out.extend_from_slice(&self.key_id.to_be_bytes());
        out.push(self.class.code());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        check_text("actor", &self.actor)?;
        check_text("reason", &self.reason)?;
        if !self.actor.is_ascii() {
            return Err(PayloadError::Text("actor"));
        }
        put_str8(&mut out, &self.actor)?;
        put_str16(&mut out, &self.reason)?;
        Ok(out)
    }

    /// Decodes strictly: one encoding per payload, no trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader::new(bytes);
        let schema = r.u16()?;
        if schema != Self::SCHEMA {
            return Err(PayloadError::Schema(schema));
        }
        let code = r.u8()?;
        let event = KeyEventKind::from_code(code).ok_or(PayloadError::Value {
            field: "event",
            value: u64::from(code),
        })?;
        let key_id = r.u32()?;
        let class_code = r.u8()?;
        let class = KeyClass::from_code(class_code).ok_or(PayloadError::Value {
            field: "class",
            value: u64::from(class_code),
        })?;
        let epoch = r.u16()?;
        let version = r.u32()?;
        let count = r.u64()?;
        let alen = usize::from(r.u8()?);
        let actor = get_str(&mut r, alen, "actor")?;
        if !actor.is_ascii() {
            return Err(PayloadError::Text("actor"));
        }
        let rlen = usize::from(r.u16()?);
        let reason = get_str(&mut r, rlen, "reason")?;
        finish(&r)?;
        Ok(KeyEvent {
            event,
            key_id,
            class,
            epoch,
            version,
            count,
            actor,
            reason,
        })
    }
}

/// Payload of an access record (kind 0x0100): one request that read or wrote sealed data of
/// this partition. Holds no personal data: who, which route, what (kinds and seq range), why,
/// and the result. When = the entry's `tx_time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    /// Credential id (16 hex digits) or `admin-cli`. ASCII, at most 255 bytes.
    pub actor: String,
    /// Role name of the credential (`municipality`, `replicator`, …). ASCII.
    pub role: String,
    /// Method and route template, e.g. `GET /v1/entries/{seq}`. ASCII.
    pub route: String,
    /// Why, as a stable code (`entry_read`, `replication_feed`, …). ASCII.
    pub purpose: String,
    /// Kind codes of the entries touched, ascending, no repeats.
    pub kinds: Vec<u16>,
    /// First seq touched and how many (a contiguous range).
    pub first_seq: u64,
    /// How many entries from `first_seq`.
    pub count: u64,
    /// `ok`, or a stable error code. ASCII.
    pub result: String,
    /// Request id, to join with the server log. ASCII.
    pub request_id: String,
}

impl AccessRecord {
    /// The schema this build writes and reads.
    pub const SCHEMA: u16 = 1;

    /// The payload bytes (docs/format.md §5); refuses text an auditor could not read.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        let mut out = Self::SCHEMA.to_be_bytes().to_vec();
        for (field, text) in [
            ("actor", &self.actor),
            ("role", &self.role),
            ("route", &self.route),
            ("purpose", &self.purpose),
        ] {
            if !text.is_ascii() {
                return Err(PayloadError::Text(field));
            }
            put_str8(&mut out, text)?;
        }
        let n = u8::try_from(self.kinds.len()).map_err(|_| PayloadError::TooLong("kinds"))?;
        if !self.kinds.windows(2).all(|w| matches!(w, [a, b] if a < b)) {
            return Err(PayloadError::Value {
                field: "kinds",
                value: 0,
            });
        }
        out.push(n);
        for k in &self.kinds {
            out.extend_from_slice(&k.to_be_bytes());
        }
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        for (field, text) in [("result", &self.result), ("request_id", &self.request_id)] {
            if !text.is_ascii() {
                return Err(PayloadError::Text(field));
            }
            put_str8(&mut out, text)?;
        }
        Ok(out)
    }

    /// Decodes strictly: one encoding per payload, no trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader::new(bytes);
        let schema = r.u16()?;
        if schema != Self::SCHEMA {
            return Err(PayloadError::Schema(schema));
        }
        let ascii = |r: &mut Reader<'_>, field: &'static str| {
            let len = usize::from(r.u8()?);
            let s = get_str(r, len, field)?;
            if s.is_ascii() {
                Ok(s)
            } else {
                Err(PayloadError::Text(field))
            }
        };
        let actor = ascii(&mut r, "actor")?;
        let role = ascii(&mut r, "role")?;
        let route = ascii(&mut r, "route")?;
        let purpose = ascii(&mut r, "purpose")?;
        let n = r.u8()?;
        let mut kinds = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let k = r.u16()?;
            if kinds.last().is_some_and(|last| *last >= k) {
                return Err(PayloadError::Value {
                    field: "kinds",
                    value: u64::from(k),
                });
            }
            kinds.push(k);
        }
        let first_seq = r.u64()?;
        let count = r.u64()?;
        let result = ascii(&mut r, "result")?;
        let request_id = ascii(&mut r, "request_id")?;
        finish(&r)?;
        Ok(AccessRecord {
            actor,
            role,
            route,
            purpose,
            kinds,
            first_seq,
            count,
            result,
            request_id,
        })
    }
}

fn put_ascii8(out: &mut Vec<u8>, field: &'static str, text: &str) -> Result<(), PayloadError> {
    check_text(field, text)?;
    if !text.is_ascii() {
        return Err(PayloadError::Text(field));
    }
    put_str8(out, text)
}

fn get_ascii8(r: &mut Reader<'_>, field: &'static str) -> Result<String, PayloadError> {
    let len = usize::from(r.u8()?);
    let s = get_str(r, len, field)?;
    if s.is_ascii() {
        Ok(s)
    } else {
        Err(PayloadError::Text(field))
    }
}

fn get_text16(r: &mut Reader<'_>, field: &'static str) -> Result<String, PayloadError> {
    let len = usize::from(r.u16()?);
    get_str(r, len, field)
}

/// Payload of a 提供記録 (kind 0x0101, 番号法 第23条): one hand-over of this partition's
/// data to another party. Item names only, no personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionRecord {
    /// Who provides: `<origin>/<partition>`. ASCII.
    pub provider: String,
    /// Who receives: a role and credential id, or a named body. ASCII.
    pub recipient: String,
    /// Names of the items provided (e.g. `資格情報(世帯)`), UTF-8.
    pub items: Vec<String>,
    /// Whether 不開示 grounds applied.
    pub nondisclosure: bool,
    /// Why: a stable code (`forward_to_intermediate`, `shikaku_rireki_file`). ASCII.
    pub purpose: String,
    /// The entries provided: `[first_seq, first_seq + count)`, and the checkpoint size that
    /// covers them.
    pub first_seq: u64,
    /// How many entries from `first_seq`.
    pub count: u64,
    /// The checkpoint size that covers them.
    pub checkpoint_size: u64,
    /// Request id, to join with the server log. ASCII.
    pub request_id: String,
}

impl ProvisionRecord {
    /// The schema this build writes and reads.
    pub const SCHEMA: u16 = 1;

    /// The payload bytes (docs/format.md §5); refuses text an auditor could not read.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        let mut out = Self::SCHEMA.to_be_bytes().to_vec();
        put_ascii8(&mut out, "provider", &self.provider)?;
        put_ascii8(&mut out, "recipient", &self.recipient)?;
        let n = u8::try_from(self.items.len()).map_err(|_| PayloadError::TooLong("items"))?;
        out.push(n);
        for item in &self.items {
            put_str16(&mut out, item)?;
        }
        out.push(u8::from(self.nondisclosure));
        put_ascii8(&mut out, "purpose", &self.purpose)?;
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.checkpoint_size.to_be_bytes());
        put_ascii8(&mut out, "request_id", &self.request_id)?;
        Ok(out)
    }

    /// Decodes strictly: one encoding per payload, no trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader::new(bytes);
        let schema = r.u16()?;
        if schema != Self::SCHEMA {
            return Err(PayloadError::Schema(schema));
        }
        let provider = get_ascii8(&mut r, "provider")?;
        let recipient = get_ascii8(&mut r, "recipient")?;
        let n = r.u8()?;
        let mut items = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            items.push(get_text16(&mut r, "item")?);
        }
        let nondisclosure = match r.u8()? {
            0 => false,
            1 => true,
            v => {
                return Err(PayloadError::Value {
                    field: "nondisclosure",
                    value: u64::from(v),
                });
            }
        };
        let purpose = get_ascii8(&mut r, "purpose")?;
        let first_seq = r.u64()?;
        let count = r.u64()?;
        let checkpoint_size = r.u64()?;
        let request_id = get_ascii8(&mut r, "request_id")?;
        finish(&r)?;
        Ok(ProvisionRecord {
            provider,
            recipient,
            items,
            nondisclosure,
            purpose,
            first_seq,
            count,
            checkpoint_size,
            request_id,
        })
    }
}

/// Payload of a forwarding receipt (kind 0x0103) on the intermediate: which hub entries the
/// copies before it came from, under which hub checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingReceipt {
    /// Hub checkpoint origin, `<hub origin>/<partition>`. ASCII.
    pub hub_origin: String,
    /// Hub seq range verified: `[hub_from, hub_to)`; `hub_to` is the checkpoint size.
    pub hub_from: u64,
    /// End of the range (exclusive): the size of the hub checkpoint.
    pub hub_to: u64,
    /// The hub's signed checkpoint at `hub_to`.
    pub hub_checkpoint: String,
    /// Hub seqs of the copies stored with this receipt (they precede it, in this order;
    /// each has the hub entry's commitment, which is how an auditor pairs them without keys).
    pub hub_seqs: Vec<u64>,
}

impl ForwardingReceipt {
    /// The schema this build writes and reads.
    pub const SCHEMA: u16 = 1;

    /// The payload bytes (docs/format.md §5); refuses text an auditor could not read.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        let mut out = Self::SCHEMA.to_be_bytes().to_vec();
        put_ascii8(&mut out, "hub_origin", &self.hub_origin)?;
        out.extend_from_slice(&self.hub_from.to_be_bytes());
        out.extend_from_slice(&self.hub_to.to_be_bytes());
        // A signed note: its lines end in LF, and the decoder takes any UTF-8 here.
        put_bytes16(&mut out, &self.hub_checkpoint)?;
        let n =
            u32::try_from(self.hub_seqs.len()).map_err(|_| PayloadError::TooLong("hub_seqs"))?;
        out.extend_from_slice(&n.to_be_bytes());
        for s in &self.hub_seqs {
            out.extend_from_slice(&s.to_be_bytes());
        }
        Ok(out)
    }

    /// Decodes strictly: one encoding per payload, no trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader::new(bytes);
        let schema = r.u16()?;
        if schema != Self::SCHEMA {
            return Err(PayloadError::Schema(schema));
        }
        let hub_origin = get_ascii8(&mut r, "hub_origin")?;
        let hub_from = r.u64()?;
        let hub_to = r.u64()?;
        let len = usize::from(r.u16()?);
        let bytes = r.take(len)?;
        let hub_checkpoint = std::str::from_utf8(bytes)
            .map_err(|_| PayloadError::Text("hub_checkpoint"))?
            .to_owned();
        let n = r.u32()?;
        let mut hub_seqs = Vec::new();
        for _ in 0..n {
            let s = r.u64()?;
            if s < hub_from || s >= hub_to || hub_seqs.last().is_some_and(|l| *l >= s) {
                return Err(PayloadError::Value {
                    field: "hub_seqs",
                    value: s,
                });
            }
            hub_seqs.push(s);
        }
        finish(&r)?;
        Ok(ForwardingReceipt {
            hub_origin,
            hub_from,
            hub_to,
            hub_checkpoint,
            hub_seqs,
        })
    }
}

#[cfg(test)]
mod tests;
