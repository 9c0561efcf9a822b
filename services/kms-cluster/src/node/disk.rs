//! Data-directory checks: refusing the sled format of earlier versions (its size is measured by
//! `store::wal::dir_size`).

use super::StartError;

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
    }
}
