//! `tenantry backup --to DIR`: an online backup of an embedded installation, taken while it serves. The
//! directory it writes is a data directory: `tenantry serve --data-dir DIR` starts from it (search indexes
//! are rebuilt from the database at start), which is the whole restore (docs/OPERATIONS.md).
//!
//! What a data directory holds, and what the backup takes:
//! - `tenantry.db`: every row, uploaded originals and export archives included — copied as one consistent
//!   snapshot (`tenantry_store::backup_embedded`);
//! - `key-pepper`: the secret API keys are hashed with (when not given by `TENANTRY_KEY_PEPPER` or
//!   `server.key_pepper`) — without it no key would verify after a restore;
//! - `tenants/<id>/outbox/`: notifications written as files when no SMTP server is configured;
//! - `tenants/<id>/` otherwise: search indexes, rebuilt from the rows, so not copied.

use std::path::Path;

use anyhow::{bail, Context};
use tenantry_domain::Config;

pub fn run(config: &Config, to: &Path) -> anyhow::Result<()> {
    if !config.database.url.is_empty() {
        bail!(
            "the database is not the embedded one ({}): back it up with its own tools, e.g. \
             `pg_dump --format=custom --file tenantry.dump \"$URL\"` (docs/OPERATIONS.md)",
            redacted(&config.database.url)
        );
    }
    let data_dir = &config.server.data_dir;
    if to.exists() && std::fs::read_dir(to).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty: back up into a new directory", to.display());
    }
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;

    let db = to.join(tenantry_store::EMBEDDED_DB_FILE);
    let bytes = tenantry_store::backup_embedded(data_dir, &db).context("copying the database")?;
    println!("database    {} ({bytes} bytes, checked)", db.display());

    let pepper = data_dir.join("key-pepper");
    if pepper.is_file() {
        copy_private(&pepper, &to.join("key-pepper"))?;
        println!("key pepper  {}", to.join("key-pepper").display());
    } else {
        println!("key pepper  not in the data directory: keep TENANTRY_KEY_PEPPER / server.key_pepper with the backup");
    }

    let mut notifications = 0usize;
    let tenants = data_dir.join("tenants");
    if tenants.is_dir() {
        for tenant in std::fs::read_dir(&tenants)? {
            let tenant = tenant?;
            let outbox = tenant.path().join("outbox");
            if outbox.is_dir() {
                let dest = to.join("tenants").join(tenant.file_name()).join("outbox");
                std::fs::create_dir_all(&dest)?;
                for file in std::fs::read_dir(&outbox)? {
                    let file = file?;
                    if file.file_type()?.is_file() {
                        std::fs::copy(file.path(), dest.join(file.file_name()))?;
                        notifications += 1;
                    }
                }
            }
        }
    }
    println!("outbox      {notifications} notification files");
    println!("restore: tenantry serve --data-dir {} (or copy it in place of the data directory)", to.display());
    Ok(())
}

/// Copies a secret, readable by its owner only.
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(to)?.write_all(&bytes).with_context(|| format!("writing {}", to.display()))
}

/// A database URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
