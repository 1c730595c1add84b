//! An online copy of the embedded store's database, taken while the service runs: SQLite's `VACUUM INTO`
//! reads one consistent snapshot (a read transaction beside the writers, in WAL mode) and writes it as a new,
//! compact database file. A PostgreSQL database is backed up with its own tools (`pg_dump`).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::{Result, StoreError, BUSY_TIMEOUT_MS};

/// The embedded database's file name in the data directory.
pub const EMBEDDED_DB_FILE: &str = "tenantry.db";

/// Writes a consistent copy of the embedded database of `data_dir` to `dest` (a file that must not exist),
/// and returns its size in bytes. The source is opened read-only; a running service keeps serving.
pub fn backup_embedded(data_dir: &Path, dest: &Path) -> Result<u64> {
    let source = data_dir.join(EMBEDDED_DB_FILE);
    if !source.is_file() {
        return Err(StoreError::Corrupt(format!("{} does not exist: no embedded database here", source.display())));
    }
    let conn =
        Connection::open_with_flags(&source, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    let dest_text = dest.to_str().ok_or_else(|| StoreError::Corrupt(format!("{} is not UTF-8", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [dest_text])?;
    let copy = Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check: String = copy.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!("the copy fails SQLite's check: {check}")));
    }
    Ok(std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_holds_what_was_committed_and_the_source_keeps_working() {
        let dir = tempfile::tempdir().expect("dir");
        let source = Connection::open(dir.path().join(EMBEDDED_DB_FILE)).expect("open");
        source
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('kept');")
            .expect("write");
        let dest = dir.path().join("copy.db");
        let bytes = backup_embedded(dir.path(), &dest).expect("backup");
        assert!(bytes > 0);
        let copy = Connection::open(&dest).expect("copy");
        let v: String = copy.query_row("SELECT v FROM t", [], |r| r.get(0)).expect("row");
        assert_eq!(v, "kept");
        source.execute("INSERT INTO t VALUES ('later')", []).expect("the source still takes writes");
        assert!(backup_embedded(dir.path(), &dest).is_err(), "an existing file is not overwritten");
        assert!(backup_embedded(&dir.path().join("nowhere"), &dir.path().join("x.db")).is_err());
    }
}
