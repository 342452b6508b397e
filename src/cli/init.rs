//! `kukaku init`: a new instance, and a self-signed TLS pair for local use on request.

use std::path::Path;

use anyhow::{Context, Result};
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
    /// A further cell of the instance whose home this is.
    pub(crate) sibling_of: Option<&'a Path>,
}

pub(crate) fn init(
    home: &Path,
    paths: &Paths,
    origin: Option<&str>,
    c: InitChoices<'_>,
) -> Result<()> {
    let InitChoices {
        dev_cert,
        kek_pkcs11,
        postgres,
        sibling_of,
    } = c;
    if let Some(first) = sibling_of {
        return init_sibling(home, paths, first, postgres);
    }
    let origin = origin.context("--origin is required")?;
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

/// `kukaku init --sibling-of FIRST`: a new instance on this home's engine with a copy of
/// FIRST's KEK, then given FIRST's identity (`Store::adopt_as_sibling`).
fn init_sibling(
    home: &Path,
    paths: &Paths,
    first: &Path,
    postgres: Option<(&Path, &str)>,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let first_paths = Paths::under(first);
    if first_paths.kek_pkcs11().exists() {
        anyhow::bail!(
            "--sibling-of: {} keeps its KEK in an HSM; a further cell of such an instance is not supported yet",
            first.display()
        );
    }
    let source = Store::open_read_only(&first_paths, StoreOptions::default())
        .with_context(|| format!("opening {} to read", first.display()))?;
    kukaku::store::private::create_dir(home)
        .or_else(|e| if home.is_dir() { Ok(()) } else { Err(e) })?;
    if paths.kek.exists() {
        anyhow::bail!(
            "{} exists: this home holds an instance",
            paths.kek.display()
        );
    }
    std::fs::copy(&first_paths.kek, &paths.kek)?;
    std::fs::set_permissions(&paths.kek, std::fs::Permissions::from_mode(0o600))?;
    let empty = init_store(paths, source.origin(), postgres)?;
    source.adopt_as_sibling(empty)?;
    let store = Store::open(paths, StoreOptions::default())?;
    println!(
        "initialised {} as a further cell of {} (origin {}); move partitions to it with `kukaku partitions move P --to {}`",
        home.display(),
        first.display(),
        store.origin(),
        home.display()
    );
    Ok(())
}
