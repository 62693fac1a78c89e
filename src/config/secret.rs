//! The one way roipd reads a file named in the config that is not the config itself: access
//! tokens, MQTT passwords, Janus secrets and PINs, TLS keys, certificates and CA bundles.
//!
//! Only regular files, and only up to a size limit: `secret_file = "/dev/zero"` must not eat
//! the memory of the box, and a FIFO must not block start-up forever (the file is opened
//! non-blocking and checked with `fstat` before a byte is read). Both config validation
//! (`roipd check` and `roipd run` before anything starts) and the parts that use the files
//! read them through here, so they judge a file the same way.
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Tokens, passwords, PINs, keys and client certificates: far bigger than any of them.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// CA bundles (Debian's system bundle is ~220 KB).
pub const MAX_CA_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a whole regular file of at most `max` bytes. Errors name the file and say why,
/// ready to follow `key: ` in a message.
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let shown = path.display();
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file ({})", file_kind(&meta)));
    }
    if meta.len() > max {
        return Err(format!("{shown}: {} bytes, more than the {max} allowed", meta.len()));
    }
    // The size can change between fstat and read: never read more than `max` + 1 bytes.
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut data).map_err(|e| format!("{shown}: {e}"))?;
    if data.len() as u64 > max {
        return Err(format!("{shown}: more than the {max} bytes allowed"));
    }
    Ok(data)
}

/// A secret as text: [`read_limited`] with [`MAX_SECRET_BYTES`], UTF-8, without the line end
/// an editor or `echo` leaves, and not empty.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let data = read_limited(path, MAX_SECRET_BYTES)?;
    let text = String::from_utf8(data).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_string())
}

/// A key that signs for the whole fleet: [`read_limited`], and refused when group or others
/// may read or write it (as ssh refuses a private key), so a wrong mode is found at start-up.
pub fn read_private(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let data = read_limited(path, MAX_SECRET_BYTES)?;
    let mode = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: mode {:04o} lets group or others read or change it; `chmod 600` it",
            path.display(),
            mode & 0o7777
        ));
    }
    Ok(data)
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "s3cret pass\r\n").unwrap();
        assert_eq!(read_secret(&p).unwrap(), "s3cret pass");
        std::fs::write(&p, vec![b'a'; MAX_SECRET_BYTES as usize]).unwrap();
        assert_eq!(read_limited(&p, MAX_SECRET_BYTES).unwrap().len(), MAX_SECRET_BYTES as usize);
    }

    #[test]
    fn private_files_must_not_be_open_to_group_or_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "k").unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false), (0o620, false)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = read_private(&p);
            assert_eq!(r.is_ok(), ok, "{mode:o}: {r:?}");
            if !ok {
                assert!(r.unwrap_err().contains(&format!("mode {mode:04o}")));
            }
        }
    }

    #[test]
    fn devices_fifos_directories_big_empty_and_binary_files_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let start = Instant::now();
        for (path, why) in
            [(Path::new("/dev/zero"), "a character device"), (fifo.as_path(), "a FIFO"), (dir.path(), "a directory")]
        {
            let e = read_secret(path).unwrap_err();
            assert!(e.contains(why) && e.starts_with(&path.display().to_string()), "{e}");
        }
        assert!(start.elapsed() < Duration::from_secs(5), "a FIFO must not block");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        assert!(read_secret(&big).unwrap_err().contains("more than the 65536 allowed"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(read_secret(&empty).unwrap_err().contains("empty"));
        std::fs::write(&empty, b"caf\xe9").unwrap();
        assert!(read_secret(&empty).unwrap_err().contains("not UTF-8"));
        assert!(read_secret(&dir.path().join("missing")).unwrap_err().contains("No such file"));
    }
}
