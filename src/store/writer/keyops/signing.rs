//! The signing-key transition (docs/keys.md): `start` adds a key that co-signs every
//! checkpoint from its batch on, `finish` retires the older one. Each step writes the `J`
//! list and a `signing_key` event in every active partition.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::{AppendError, KeyActor, Ops, StorageError, Target, Writer};
use crate::crypto::signer::public_key_of;
use crate::crypto::{CheckpointSigner, Secret32, WrapPurpose};
use crate::ledger::header::PartitionId;
use crate::ledger::payload::{KeyClass, KeyEvent, KeyEventKind};
use crate::store::records::{
    SIGNING_KEYS, SigningKeyRecord, SigningKeys, encode, signing_key_slot,
};
use crate::store::writer::PState;

/// A step decided: the version its events name, who signs from this batch on, and the
/// events' reason.
struct Step {
    version: u32,
    signer: CheckpointSigner,
    reason: String,
}

/// A refusal of the instance's key state.
fn refuse(why: &str) -> AppendError {
    AppendError::KeyState {
        partition: "instance".into(),
        key_id: 0,
        reason: why.to_owned(),
    }
}

impl Writer {
    /// A signing-key transition step. Start: a new seed (durable in the key store before the
    /// data batch), the `J` list, a `signing_key` event in every active partition, and from
    /// this batch's checkpoints on both keys sign. Finish: the older key is marked retired
    /// and stops signing (the caller removes its seed once this batch is durable).
    pub(in crate::store::writer) fn signing_key(
        &mut self,
        finish: bool,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
        staged: &mut HashMap<PartitionId, PState>,
    ) -> Result<u32, AppendError> {
        let mut keys = self
            .inner
            .signing_keys
            .read()
            .map_err(|_| AppendError::BadState("signing keys".into()))?
            .clone();
        let signing: Vec<SigningKeyRecord> =
            keys.iter().filter(|k| k.retired_ms == 0).cloned().collect();
        let step = match (finish, signing.as_slice()) {
            (false, [old]) => self.start_transition(&mut keys, old, who, now, ops)?,
            (false, _) => {
                return Err(refuse(
                    "a signing-key transition is running; finish it first (--finish)",
                ));
            }
            (true, [old, new]) => self.finish_transition(&mut keys, old, new, who, now)?,
            (true, _) => return Err(refuse("no signing-key transition is running")),
        };
        let list = encode(&SigningKeys { keys: keys.clone() }).map_err(AppendError::storage)?;
        ops.push((Target::Sys, SIGNING_KEYS.to_vec(), list));
        self.announce_signing_key(&step, who, now, ops, staged)?;
        // The checkpoints of this very batch are signed the new way.
        if let Ok(mut s) = self.inner.signer.write() {
            *s = Arc::new(step.signer);
        }
        if let Ok(mut k) = self.inner.signing_keys.write() {
            *k = keys;
        }
        Ok(step.version)
    }

    /// Start: a new seed wrapped into this batch's key-store writes; `old` and the new key
    /// both sign.
    fn start_transition(
        &self,
        keys: &mut Vec<SigningKeyRecord>,
        old: &SigningKeyRecord,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
    ) -> Result<Step, AppendError> {
        let version = keys.iter().map(|k| k.version).max().unwrap_or(1) + 1;
        let seed = Secret32::generate()?;
        let public = public_key_of(&seed).map_err(|e| refuse(&crate::error::report(&e)))?;
        let wrapped =
            self.inner
                .keyring
                .wrap(WrapPurpose::SigningKey, "instance", version, &seed)?;
        ops.push((Target::KeyStore, signing_key_slot(version), wrapped));
        keys.push(SigningKeyRecord {
            version,
            public,
            added_ms: now,
            retired_ms: 0,
        });
        let old_seed = self.signing_seed(old.version)?;
        let signer = CheckpointSigner::from_seeds(&self.inner.origin, &[&old_seed, &seed])
            .map_err(|e| refuse(&crate::error::report(&e)))?;
        let key = crate::ledger::VerifierKey::new(&self.inner.origin, public)
            .map(|k| k.to_text())
            .unwrap_or_default();
        let reason = format!(
            "{}; transition started: checkpoints carry signatures of v{} and v{version} ({key})",
            who.reason, old.version,
        );
        Ok(Step {
            version,
            signer,
            reason,
        })
    }

    /// Finish: `old` is retired, `new` signs alone.
    fn finish_transition(
        &self,
        keys: &mut [SigningKeyRecord],
        old: &SigningKeyRecord,
        new: &SigningKeyRecord,
        who: &KeyActor,
        now: u64,
    ) -> Result<Step, AppendError> {
        if let Some(k) = keys.iter_mut().find(|k| k.version == old.version) {
            k.retired_ms = now;
        }
        let seed = self.signing_seed(new.version)?;
        let signer = CheckpointSigner::from_seed(&self.inner.origin, &seed)
            .map_err(|e| refuse(&crate::error::report(&e)))?;
        let reason = format!(
            "{}; transition finished: v{} retired, checkpoints are signed by v{} only",
            who.reason, old.version, new.version
        );
        Ok(Step {
            version: old.version,
            signer,
            reason,
        })
    }

    /// The seed of signing key `version`, from the key store.
    fn signing_seed(&self, version: u32) -> Result<Secret32, AppendError> {
        self.inner
            .keyring
            .instance_key(&signing_key_slot(version), WrapPurpose::SigningKey)?
            .ok_or_else(|| refuse("a signing seed is missing from the key store"))
    }

    /// A `signing_key` event in every active partition that is not quarantined.
    fn announce_signing_key(
        &mut self,
        step: &Step,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
        staged: &mut HashMap<PartitionId, PState>,
    ) -> Result<(), AppendError> {
        let partitions: Vec<PartitionId> = crate::store::read_registry(&*self.inner.engine)
            .map_err(|e| AppendError::Storage(StorageError::Registry(Box::new(e))))?
            .into_iter()
            .filter(|i| i.status == crate::store::PartitionStatus::Active)
            .map(|i| i.partition)
            .collect();
        for p in &partitions {
            if self.check_quarantine(p).is_err() {
                continue;
            }
            let mut st = self.load(p)?;
            let event = KeyEvent {
                event: KeyEventKind::SigningKey,
                key_id: step.version,
                class: KeyClass::Resident,
                epoch: 0,
                version: step.version,
                count: 0,
                actor: who.actor.clone(),
                reason: step.reason.clone(),
            };
            self.key_event(p, &mut st, &event, now, ops)?;
            staged.insert(p.clone(), st);
        }
        Ok(())
    }
}
