//! The key requests: status, DEK and signing-key rotation, re-encryption, the public keys,
//! destroy (docs/keys.md).

use std::time::{Duration, Instant};

use super::{AdminError, Out, Reply, one, partitions};
use crate::crypto::instance_kek::KekTarget;
use crate::store::{DestroyScope, KeyActor, KeyAdminError, Store};

/// `keys status`: every DEK version per partition, and any unfinished re-encryption.
pub(super) fn status(store: &Store, asked: &[String], out: Out<'_>) -> Result<(), AdminError> {
    out(Reply::Line(
        "partition\tkey_id\tclass\tepoch\tversion\tstatus\tencryptions\tentries\tcreated".into(),
    ));
    for p in partitions(store, asked)? {
        for k in store.key_status(&p)? {
            out(Reply::Line(format!(
                "{p}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                k.key_id,
                k.class,
                k.epoch,
                k.version,
                k.status,
                k.encryptions,
                k.entries,
                crate::ledger::format_utc_ms(k.created_ms)
            )));
        }
        if let Some(job) = store.reencrypt_status(&p)? {
            out(Reply::Line(format!(
                "{p}\tre-encryption stopped at seq {} of {} ({} moved); run `kukaku keys reencrypt` to resume",
                job.next_seq, job.end, job.moved
            )));
        }
    }
    Ok(())
}

/// `keys rotate-dek`: a new current DEK version for every key scope of the partitions.
pub(super) fn rotate_deks(
    store: &Store,
    asked: &[String],
    who: KeyActor,
    out: Out<'_>,
) -> Result<(), AdminError> {
    let ids = partitions(store, asked)?;
    let len = ids.len() as u64;
    let mut rotated = 0usize;
    for (i, p) in ids.iter().enumerate() {
        rotated += store
            .rotate_deks(p, who.clone())
            .map_err(KeyAdminError::from)?
            .len();
        out(Reply::Progress {
            label: "rotating".into(),
            pos: i as u64 + 1,
            len,
        });
    }
    out(Reply::Line(format!(
        "rotated {rotated} key scope(s) in {len} partition(s); see `kukaku keys status`"
    )));
    Ok(())
}

/// `keys rotate-signing-key [--finish]`: add the new key (both sign), or retire the old.
pub(super) fn rotate_signing_key(
    store: &Store,
    finish: bool,
    who: KeyActor,
    out: Out<'_>,
) -> Result<(), AdminError> {
    if finish {
        let v = store.finish_signing_rotation(who)?;
        out(Reply::Line(format!(
            "signing key v{v} retired (its seed is removed); checkpoints carry the new key's signature only"
        )));
        return Ok(());
    }
    let v = store.rotate_signing_key(who)?;
    let key = store
        .signing_keys()
        .into_iter()
        .find(|k| k.version == v)
        .map(|k| k.key.to_text())
        .unwrap_or_default();
    out(Reply::Line(format!(
        "signing key v{v} added: every checkpoint now carries the old and the new signature"
    )));
    out(Reply::Line(format!("new key: {key}")));
    out(Reply::Line(
        "pin it everywhere (auditors' trust files: `kukaku public-keys`; intermediates: --upstream-vkey), then run `kukaku keys rotate-signing-key --finish`".into(),
    ));
    Ok(())
}

/// `keys reencrypt`: every entry under an older key moved to the current one, at most
/// `rate` entries a second (0: no limit), `chunk` per batch; stops (resumable) when nobody
/// listens.
pub(super) fn reencrypt(
    store: &Store,
    asked: &[String],
    who: KeyActor,
    (rate, chunk): (u64, u64),
    out: Out<'_>,
) -> Result<(), AdminError> {
    for p in partitions(store, asked)? {
        let started = Instant::now();
        let mut first_moved = None;
        let mut listening = true;
        let label = format!("re-encrypting {p}");
        let step = store.reencrypt(&p, who.clone(), chunk.max(1), &mut |s| {
            let base = *first_moved.get_or_insert(s.moved);
            listening = out(Reply::Progress {
                label: label.clone(),
                pos: s.next_seq,
                len: s.end,
            });
            // Throttle: at most `rate` entries moved per second, so serving goes on.
            if rate > 0 {
                let due = Duration::from_secs_f64((s.moved - base) as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            listening
        })?;
        if !step.done {
            return Err(AdminError::Stopped);
        }
        out(Reply::Line(format!(
            "{p}: {} entries moved to current keys (seqs 0..{})",
            step.moved, step.end
        )));
    }
    Ok(())
}

/// `public-keys`: the trust file lines of the instance's signing keys and its witness key,
/// or one of them alone.
pub(super) fn public_keys(store: &Store, witness: bool, log: bool, out: Out<'_>) {
    let witness_key = store.cosigner_key().to_text();
    if witness {
        out(Reply::Line(witness_key));
        return;
    }
    if log {
        let key = store.log_key().map(|k| k.to_text()).unwrap_or_default();
        out(Reply::Line(key));
        return;
    }
    out(Reply::Line(format!(
        "# kukaku-audit trust file lines of {}",
        store.origin()
    )));
    for (i, k) in store.signing_keys().iter().enumerate() {
        let retired = if k.retired_ms.is_some() {
            ", retired"
        } else {
            ""
        };
        out(Reply::Line(format!(
            "{}  # signing key v{}{retired}",
            k.trust_line(i == 0),
            k.version
        )));
    }
    out(Reply::Line(
        "# this instance as a witness (pin on the hub with serve --witness-vkey):".into(),
    ));
    out(Reply::Line(format!("# witness {witness_key}")));
}

/// `keys destroy`: a partition's keys (or one fiscal year's), with what that leaves.
pub(super) fn destroy(
    store: &Store,
    partition: &str,
    (fiscal_year, confirm): (Option<u16>, &str),
    who: KeyActor,
    out: Out<'_>,
) -> Result<(), AdminError> {
    let p = one(store, partition)?;
    let scope = fiscal_year.map_or(DestroyScope::Partition, DestroyScope::FiscalYear);
    let report = store.destroy(&p, scope, confirm, who)?;
    for (key_id, entries) in &report.keys {
        out(Reply::Line(format!(
            "{p}: key {key_id} destroyed; {entries} entries are unreadable from now on"
        )));
    }
    if matches!(scope, DestroyScope::Partition) {
        out(Reply::Line(format!(
            "{p}: blind-index key, derived index entries and transmission records destroyed and compacted away; sealed writes are refused"
        )));
        out(Reply::Line(
            "RocksDB's MANIFEST still names the bounds of the removed table files until the instance is next opened: restart `kukaku serve` now (docs/keys.md)".into(),
        ));
    }
    match report.kek {
        Some(k) => out(Reply::Line(format!(
            "KEK rotated {} -> {}: older copies of the key store no longer open",
            k.old_fingerprint, k.new_fingerprint
        ))),
        None => out(Reply::Line(
            "warning: fixed KEK, not rotated; an older key-store copy still opens the destroyed keys".into(),
        )),
    };
    Ok(())
}

/// `keys rotate-kek`: every wrapped key rewrapped under a new KEK (in `to`, when the KEK
/// moves between a file and an HSM); the old KEK is destroyed.
pub(super) fn rotate_kek(
    store: &Store,
    who: KeyActor,
    to: Option<&KekTarget>,
    out: Out<'_>,
) -> Result<(), AdminError> {
    let r = match to {
        Some(target) => store.rotate_kek_to(who, target)?,
        None => store.rotate_kek(who)?,
    };
    let place = match to {
        Some(KekTarget::Pkcs11(_)) => "; the KEK is in the HSM (kek.pkcs11)",
        Some(KekTarget::File) => "; the KEK is in kek.key",
        None => "",
    };
    out(Reply::Line(format!(
        "rewrapped {} key(s) under KEK {} (was {}); {} partition(s) got a rewrap event; the old KEK is destroyed{place}",
        r.keys, r.new_fingerprint, r.old_fingerprint, r.partitions
    )));
    Ok(())
}

/// `keys retire`: a key that seals nothing any more loses its wrapped copy.
pub(super) fn retire(
    store: &Store,
    partition: &str,
    key_id: u32,
    who: KeyActor,
    out: Out<'_>,
) -> Result<(), AdminError> {
    let p = one(store, partition)?;
    store.retire(&p, key_id, who)?;
    out(Reply::Line(format!(
        "{p}: key {key_id} retired (its wrapped key is removed)"
    )));
    Ok(())
}
