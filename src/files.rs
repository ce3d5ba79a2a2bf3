//! Writing files so that a crash never leaves a half-written one behind.

use std::io::{self, Cursor, Write};
use std::path::Path;

use image::DynamicImage;

/// Writes `bytes` to `path` through a temporary file in the same folder, flushed to disk and
/// renamed over the destination: readers see the old file or the whole new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // A temporary file is private (0600); what we write is the user's ordinary output.
    #[cfg(unix)]
    let temp = {
        use std::os::unix::fs::PermissionsExt;
        tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(0o644))
            .tempfile_in(dir)
    };
    #[cfg(not(unix))]
    let temp = tempfile::NamedTempFile::new_in(dir);
    let mut temp = temp?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|err| err.error)?;
    Ok(())
}

/// Writing a file failed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct WriteError {
    pub path: String,
    #[source]
    pub source: io::Error,
}

/// Encodes an image as PNG in memory.
pub fn encode_png(image: &DynamicImage) -> Vec<u8> {
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encoding an 8-bit image as PNG in memory cannot fail");
    png
}

/// Saves an image as PNG, atomically.
pub fn save_png(image: &DynamicImage, path: &Path) -> Result<(), WriteError> {
    write_atomically(path, &encode_png(image)).map_err(|source| WriteError {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_folder_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/folder/out.bin");
        assert!(write_atomically(&path, b"x").is_err());
    }
}
