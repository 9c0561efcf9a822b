//! Data-directory checks and sizes: refusing the sled format of earlier versions and measuring
//! what the directory holds.

use super::StartError;

/// Size of the regular files under `dir`, recursively.
pub(super) fn tree_size(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Refuses a data directory written by the sled-based store of earlier versions (it has sled's
/// `conf` and `db` files), with what to do instead.
pub(super) fn refuse_old_format(dir: &std::path::Path) -> Result<(), StartError> {
    if dir.join("conf").is_file() && dir.join("db").is_file() {
        return Err(StartError::OldFormat(format!(
            "{} holds the sled-based data format of kms-cluster before step 6, which this \
             version does not read. In a cluster: remove this node (`kmsctl cluster remove --id N`), \
             move the directory away and start the node again so it joins fresh from its peers. \
             A single node starts fresh from an empty directory (counts rebuild as clients renew).",
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_directories_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refuse_old_format(dir.path()).is_ok());
        std::fs::write(dir.path().join("conf"), b"x").unwrap();
        std::fs::write(dir.path().join("db"), b"y").unwrap();
        let err = refuse_old_format(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("sled") && err.contains("kmsctl cluster remove"),
            "{err}"
        );
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), b"abc").unwrap();
        assert_eq!(tree_size(dir.path()), 5);
    }
}
