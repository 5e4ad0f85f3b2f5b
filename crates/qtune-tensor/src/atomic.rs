use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes a file so that readers never see a half-written one, even if the
/// process is killed (`kill -9`) at any moment: the content goes to an
/// unnamed file in the destination's directory (Linux `O_TMPFILE`), which
/// gets a name only once it is complete and flushed, and is then renamed
/// over the destination. A kill before that leaves nothing; two processes
/// writing the same destination each rename a whole file, the last one
/// winning. Where `O_TMPFILE` is not available (another OS, a filesystem
/// without it) a named temporary file is used instead; a temporary left by
/// a killed process is removed by the next write of the same destination.
pub fn write_atomic<F>(path: &Path, write: F) -> io::Result<()>
where
    F: FnOnce(&mut io::BufWriter<fs_err::File>) -> io::Result<()>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    remove_stale_temporaries(&dir, &file_name);
    // Unique per call, so that threads of one process writing the same
    // destination do not share a temporary name either.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.tmp{}.{call}", std::process::id()));
    #[cfg(target_os = "linux")]
    if let Some(file) = anonymous::create(&dir) {
        let result = (|| {
            let file = fs_err::File::from_parts(file, &tmp);
            let mut w = io::BufWriter::new(file);
            write(&mut w)?;
            w.flush()?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            // The name appears only now, complete, and is renamed at once.
            anonymous::link(file.file(), &tmp)?;
            fs_err::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        return result;
    }
    let result = (|| {
        let file = fs_err::File::create(&tmp)?;
        let mut w = io::BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs_err::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes `.<file_name>.tmp<pid>[.<n>]` files of processes that no longer run
/// (left by a kill in the named-temporary fallback, or between the link and
/// the rename). Only checked where `/proc` tells which processes run.
fn remove_stale_temporaries(dir: &Path, file_name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{file_name}.tmp");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .map(|rest| rest.split('.').next().unwrap_or(rest))
        else {
            continue;
        };
        if !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(target_os = "linux")]
mod anonymous {
    use std::ffi::CString;
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;

    /// An unnamed regular file in `dir`, or `None` where the kernel or the
    /// filesystem cannot make one.
    pub fn create(dir: &Path) -> Option<File> {
        std::fs::OpenOptions::new()
            .write(true)
            .mode(0o666)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
            .ok()
    }

    /// Gives the unnamed `file` the name `to` (`linkat` through
    /// `/proc/self/fd`, which needs no privilege, unlike `AT_EMPTY_PATH`).
    pub fn link(file: &File, to: &Path) -> io::Result<()> {
        let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(io::Error::other)?;
        let to_c = CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: both paths are valid NUL-terminated strings that outlive the
        // call; linkat reads them and touches no other memory.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to_c.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            let e = io::Error::last_os_error();
            Err(io::Error::new(
                e.kind(),
                format!("cannot name `{}`: {e}", to.display()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("qtune-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("table.txt");
        let err = write_atomic(&target, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("interrupted"))
        });
        assert!(err.is_err());
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        write_atomic(&target, |w| w.write_all(b"done")).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "done");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = std::env::temp_dir().join(format!("qtune-atomic-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // pid 0 never names a user process; our own pid is alive.
        let dead = dir.join(".t.npz.tmp0");
        let dead2 = dir.join(".t.npz.tmp0.3");
        let alive = dir.join(format!(".t.npz.tmp{}.999999", std::process::id()));
        let other = dir.join(".u.npz.tmp0");
        for p in [&dead, &dead2, &alive, &other] {
            std::fs::write(p, b"half").unwrap();
        }
        write_atomic(&dir.join("t.npz"), |w| w.write_all(b"whole")).unwrap();
        assert!(!dead.exists() && !dead2.exists());
        assert!(alive.exists() && other.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
