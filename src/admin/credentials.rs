//! `kukaku credentials issue|list|revoke` as admin requests: run directly on a store when no
//! server runs, and through the admin socket while `kukaku serve` holds it, so a leaked
//! token is revoked without stopping the hub (the server reads credentials from the store on
//! every request: the next one with a revoked token gets 401).

use std::collections::BTreeSet;

use super::{AdminError, AdminRequest, Reply};
use crate::crypto::credential::{CredentialId, Reach, Role};
use crate::domain::InsurerNumber;
use crate::ledger::{PartitionId, format_utc_ms};
use crate::store::{Store, now_unix_ms};

/// Runs one of the three credential requests; other requests are not answered here.
pub(super) fn execute(
    store: &Store,
    req: &AdminRequest,
    out: &mut dyn FnMut(Reply) -> bool,
) -> Result<(), AdminError> {
    match req {
        AdminRequest::IssueCredential {
            role,
            partition,
            prefecture,
            partitions,
            all,
            label,
            expires_in_days,
            client_cert_sha256,
        } => {
            let role =
                Role::from_name(role).ok_or_else(|| AdminError::UnknownRole(role.clone()))?;
            let reach = reach(
                partition.as_deref(),
                prefecture.as_deref(),
                partitions,
                *all,
            )?;
            let bound = client_cert_sha256.as_deref().map(certificate).transpose()?;
            let expires = now_unix_ms() + u64::from(*expires_in_days) * 86_400_000;
            let (token, stored) =
                store.issue_bound_credential(role, reach, label, expires, bound)?;
            if bound.is_some() {
                out(Reply::Line("bound to the given client certificate".into()));
            }
            out(Reply::Line(format!(
                "credential {} ({role}) expires {}",
                stored.id,
                format_utc_ms(expires)
            )));
            out(Reply::Line("token (shown once, store it now):".into()));
            out(Reply::Line((*token.to_text()).clone()));
        }
        AdminRequest::ListCredentials => list(store, out)?,
        AdminRequest::RevokeCredential { id } => {
            let id = CredentialId::parse(id).ok_or_else(|| AdminError::CredentialId(id.clone()))?;
            let c = store.revoke_credential(id)?;
            out(Reply::Line(format!(
                "revoked {} ({}, {}); its next request is refused",
                c.id, c.role, c.label
            )));
        }
        _ => {}
    }
    Ok(())
}

fn partition(text: &str) -> Result<PartitionId, AdminError> {
    InsurerNumber::parse(text)
        .map(|n| n.partition_id())
        .map_err(|e| AdminError::BadPartition(text.to_owned(), e.to_string()))
}

fn reach(
    one: Option<&str>,
    prefecture: Option<&str>,
    partitions: &[String],
    all: bool,
) -> Result<Reach, AdminError> {
    Ok(if let Some(p) = one {
        Reach::Partition(partition(p)?)
    } else if let Some(code) = prefecture {
        Reach::Prefecture(code.to_owned())
    } else if all {
        Reach::All
    } else {
        Reach::Partitions(
            partitions
                .iter()
                .map(|s| partition(s))
                .collect::<Result<BTreeSet<_>, _>>()?,
        )
    })
}

fn certificate(hex: &str) -> Result<[u8; 32], AdminError> {
    let bad = || AdminError::CertificateHash(hex.to_owned());
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        *byte = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn list(store: &Store, out: &mut dyn FnMut(Reply) -> bool) -> Result<(), AdminError> {
    out(Reply::Line(
        "id\trole\treach\tlabel\texpires\trevoked".into(),
    ));
    let now = now_unix_ms();
    for c in store.credentials()? {
        let reach = match &c.reach {
            Reach::Partition(p) => p.to_string(),
            Reach::Prefecture(code) => format!("prefecture {code}"),
            Reach::Partitions(set) => format!("{} partitions", set.len()),
            Reach::All => "all".into(),
        };
        let expires = if c.expires_ms <= now {
            format!("EXPIRED {}", format_utc_ms(c.expires_ms))
        } else {
            format_utc_ms(c.expires_ms)
        };
        let revoked = if c.revoked_ms == 0 {
            "-".into()
        } else {
            format_utc_ms(c.revoked_ms)
        };
        out(Reply::Line(format!(
            "{}\t{}\t{reach}\t{}\t{expires}\t{revoked}",
            c.id, c.role, c.label
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_hashes_are_64_hex_digits() {
        let hex = "00ff".repeat(16);
        assert_eq!(certificate(&hex).ok().map(|c| c[1]), Some(0xff));
        for bad in ["", "00", &"g0".repeat(32), &"0".repeat(63), &"é".repeat(32)] {
            assert!(certificate(bad).is_err(), "{bad}");
        }
    }
}
