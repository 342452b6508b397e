//! `kukaku init`: a new instance, and a self-signed TLS pair for local use on request.

use std::path::Path;

use anyhow::Result;
use kukaku::api::server;
use kukaku::store::{Paths, Store, StoreOptions};

/// The engine a new instance keeps its data in: the embedded RocksDB, or PostgreSQL (the
/// DSN file and the schema).
fn init_store(paths: &Paths, origin: &str, postgres: Option<(&Path, &str)>) -> Result<Store> {
    let Some((dsn_file, schema)) = postgres else {
        return Ok(Store::init(paths, origin, StoreOptions::default())?);
    };
    #[cfg(feature = "postgres")]
    {
        let record = kukaku::store::EngineRecord::postgres(schema, dsn_file);
        let store = Store::init_recorded(paths, origin, StoreOptions::default(), &record)?;
        println!("the data is in PostgreSQL (schema {schema}); engine.json names it");
        Ok(store)
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (dsn_file, schema);
        anyhow::bail!(
            "--pg-dsn-file: this kukaku was built without PostgreSQL (cargo build --features postgres)"
        )
    }
}

/// What `kukaku init` makes beside the instance.
pub(crate) struct InitChoices<'a> {
    /// A self-signed TLS pair for localhost.
    pub(crate) dev_cert: bool,
    /// The KEK in an HSM: its PKCS#11 configuration.
    pub(crate) kek_pkcs11: Option<&'a Path>,
    /// The data in PostgreSQL: the DSN file and the schema.
    pub(crate) postgres: Option<(&'a Path, &'a str)>,
}

pub(crate) fn init(home: &Path, paths: &Paths, origin: &str, c: InitChoices<'_>) -> Result<()> {
    let InitChoices {
        dev_cert,
        kek_pkcs11,
        postgres,
    } = c;
    if let Some(config) = kek_pkcs11 {
        // Checked before anything is written: the file parses and names a PIN source.
        let config = kukaku::crypto::pkcs11::Pkcs11Config::load(config)?;
        kukaku::store::private::create_dir(home)
            .or_else(|e| if home.is_dir() { Ok(()) } else { Err(e) })?;
        config.save(&paths.kek_pkcs11())?;
    }
    if let Err(e) = init_store(paths, origin, postgres) {
        if kek_pkcs11.is_some() {
            let _ = std::fs::remove_file(paths.kek_pkcs11());
        }
        return Err(e);
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
