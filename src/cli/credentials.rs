//! `kukaku credentials issue|list|revoke`: through a running server's admin socket (so a
//! revocation acts on its next request), or on the store directly when none runs.

use anyhow::Result;
use kukaku::api::server;
use kukaku::store::Paths;

use super::args::*;
use super::keys::admin_command;

/// `credentials …` as an admin request: through the running server's admin socket (so a
/// revocation acts on its next request), or on the store directly when none runs.
pub(crate) fn credentials(paths: &Paths, command: CredentialsCommand) -> Result<()> {
    use kukaku::admin::AdminRequest;
    let request = match command {
        CredentialsCommand::Issue {
            role,
            partition,
            prefecture,
            partitions,
            all,
            label,
            expires_in_days,
            client_cert,
        } => AdminRequest::IssueCredential {
            role,
            partition,
            prefecture,
            partitions,
            all,
            label,
            expires_in_days,
            client_cert_sha256: client_cert
                .as_deref()
                .map(server::certificate_sha256)
                .transpose()?
                .map(|h| h.iter().map(|b| format!("{b:02x}")).collect()),
        },
        CredentialsCommand::List => AdminRequest::ListCredentials,
        CredentialsCommand::Revoke { id } => AdminRequest::RevokeCredential { id },
    };
    admin_command(paths, request)
}
