//! Recently opened stacks, kept in `recent.json` in the user's configuration folder
//! (`$UNET_STUDIO_CONFIG_DIR`, else `$XDG_CONFIG_HOME/unet-studio`, else
//! `~/.config/unet-studio`). Read and written in background jobs.

use std::path::{Path, PathBuf};

use crate::data::DataError;

/// How many entries are kept.
pub const MAX_RECENT: usize = 10;

/// The configuration folder, if one can be found.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("UNET_STUDIO_CONFIG_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(d).join("unet-studio"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/unet-studio"))
}

/// The user's data folder, where the work on the bundled sample and on read-only stacks is
/// kept: `$UNET_STUDIO_DATA_DIR`, else `$XDG_DATA_HOME/unet-studio`, else
/// `~/.local/share/unet-studio`.
pub fn data_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("UNET_STUDIO_DATA_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Some(PathBuf::from(d).join("unet-studio"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/unet-studio"))
}

fn recent_file(dir: &Path) -> PathBuf {
    dir.join("recent.json")
}

/// Reads the list (empty when there is none yet).
pub fn load(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let path = recent_file(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DataError::Invalid {
            path,
            message: format!("unreadable list of recent files: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(DataError::Io { path, source: e }),
    }
}

/// Puts `opened` first (once), keeps [`MAX_RECENT`] entries, writes the list atomically.
pub fn remember(dir: &Path, opened: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut list = load(dir).unwrap_or_default();
    let opened = std::fs::canonicalize(opened).unwrap_or_else(|_| opened.to_path_buf());
    list.retain(|p| p != &opened);
    list.insert(0, opened);
    list.truncate(MAX_RECENT);
    let json = serde_json::to_vec_pretty(&list).map_err(|e| DataError::Invalid {
        path: recent_file(dir),
        message: e.to_string(),
    })?;
    crate::data::write_atomic(&recent_file(dir), &json)?;
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_recent_first_without_duplicates() {
        let d = std::env::temp_dir().join(format!("unet-recent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        assert!(load(&d).unwrap().is_empty());
        for p in ["/a", "/b", "/a"] {
            remember(&d, Path::new(p)).unwrap();
        }
        assert_eq!(
            load(&d).unwrap(),
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        for i in 0..20 {
            remember(&d, Path::new(&format!("/x{i}"))).unwrap();
        }
        assert_eq!(load(&d).unwrap().len(), MAX_RECENT);
        std::fs::write(recent_file(&d), b"nonsense").unwrap();
        assert!(load(&d).unwrap_err().to_string().contains("recent.json"));
    }
}
