//! `kukaku init`: a new instance, and a self-signed TLS pair for local use on request.

use std::path::Path;

use anyhow::Result;
use kukaku::api::server;
use kukaku::store::{Paths, Store, StoreOptions};

pub(crate) fn init(home: &Path, paths: &Paths, origin: &str, dev_cert: bool) -> Result<()> {
    Store::init(paths, origin, StoreOptions::default())?;
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
