//! `kukaku init`: a new instance, and a self-signed TLS pair for local use on request.

use std::path::Path;

use anyhow::Result;
use kukaku::api::server;
use kukaku::store::{Paths, Store, StoreOptions};

pub(crate) fn init(
    home: &Path,
    paths: &Paths,
    origin: &str,
    dev_cert: bool,
    kek_pkcs11: Option<&Path>,
) -> Result<()> {
    if let Some(config) = kek_pkcs11 {
        // Checked before anything is written: the file parses and names a PIN source.
        let config = kukaku::crypto::pkcs11::Pkcs11Config::load(config)?;
        kukaku::store::private::create_dir(home)
            .or_else(|e| if home.is_dir() { Ok(()) } else { Err(e) })?;
        config.save(&paths.kek_pkcs11())?;
    }
    if let Err(e) = Store::init(paths, origin, StoreOptions::default()) {
        if kek_pkcs11.is_some() {
            let _ = std::fs::remove_file(paths.kek_pkcs11());
        }
        return Err(e.into());
    }
    if kek_pkcs11.is_some() {
        println!(
            "the KEK is in the HSM ({}); no kek.key",
            paths.kek_pkcs11().display()
        );
    }
    println!("initialised {} (origin {origin})", home.display());
    if dev_cert {
        let (cert, key) = server::dev_cert_paths(home);
        server::write_dev_cert(&cert, &key)?;
        println!(
            "wrote self-signed TLS pair {} and {} (localhost only)",
            cert.display(),
            key.display()
        );
    }
    Ok(())
}
