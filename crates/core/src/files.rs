//! Modes of the files that hold state: the data dir and blob dirs 0700, the database
//! (and so its WAL and shm, which SQLite creates with the database's mode), the audit
//! log and the root key 0600. Files are created that way; existing looser ones are
//! reported at start-up, naming the fix, rather than silently changed.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) with mode 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates `path` empty with mode 0600 unless it exists.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The paths among `paths` that exist and that group or others may access.
pub fn loose(paths: &[&Path]) -> Vec<(String, u32)> {
    paths
        .iter()
        .filter_map(|p| {
            let mode = std::fs::metadata(p).ok()?.permissions().mode() & 0o777;
            (mode & 0o077 != 0).then(|| (p.display().to_string(), mode))
        })
        .collect()
}

/// Warns about each state file or directory under `data_dir` (and `blob_dir`) that
/// group or others can access.
pub fn warn_loose(data_dir: &Path, blob_dir: Option<&Path>) {
    let db = data_dir.join("sealstore.db");
    let wal = data_dir.join("sealstore.db-wal");
    let shm = data_dir.join("sealstore.db-shm");
    let audit = data_dir.join("audit.log");
    let mut paths: Vec<&Path> = vec![data_dir, &db, &wal, &shm, &audit];
    if let Some(b) = blob_dir {
        paths.push(b);
    }
    for (path, mode) in loose(&paths) {
        let want = if Path::new(&path).is_dir() { "700" } else { "600" };
        tracing::warn!(
            path,
            mode = format!("{mode:o}"),
            "state file is readable by group or others; run: chmod {want} {path}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_and_reports_loose() {
        let dir = std::env::temp_dir().join(format!("sealstore-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        private_dir(&dir.join("a/b")).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join("a/b")).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = dir.join("a/f");
        private_file(&f).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(loose(&[&f, &dir.join("a/b")]).is_empty());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(loose(&[&f, &dir.join("missing")]).len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
