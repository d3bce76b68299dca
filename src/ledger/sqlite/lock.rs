//! The lock file that makes a game process the only one using an SQLite ledger.
//!
//! `<ledger>.lock` beside the database carries an exclusive OS advisory lock (`flock` on Unix,
//! `LockFileEx` on Windows) for as long as the store lives. The OS drops the lock when the file is
//! closed, including when the process is killed, so a stale lock file never blocks a restart. The
//! file's text names the holder (pid, server id, host, start time) for the error a refused process
//! reports; the lock, not the text, decides.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::ledger::{LedgerError, ServerId};

/// An exclusive lock on a ledger's lock file, released when this is dropped.
#[derive(Debug)]
pub(super) struct LedgerLock {
    /// Holds the lock: closing it releases it.
    _file: File,
}

/// The lock file of the ledger at `db`: its path with `.lock` appended.
pub(super) fn lock_path(db: &Path) -> PathBuf {
    super::sidecar(db, ".lock")
}

impl LedgerLock {
    /// Takes the lock of the ledger at `db` for `server`, or says who holds it
    /// ([`LedgerError::InUse`]). Also returns whether this call created the lock file.
    pub(super) fn acquire(db: &Path, server: &ServerId) -> Result<(Self, bool), LedgerError> {
        let path = lock_path(db);
        let location = db.display().to_string();
        let failed = |what: &str, e: std::io::Error| LedgerError::Open {
            location: location.clone(),
            reason: format!("cannot {what} its lock file {}: {e}", path.display()),
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        let (mut file, created) = match options.clone().create_new(true).open(&path) {
            Ok(file) => (file, true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                (options.open(&path).map_err(|e| failed("open", e))?, false)
            }
            Err(e) => return Err(failed("create", e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // Best effort: the holder may be between truncating and writing it.
                let _ = file.read_to_string(&mut text);
                return Err(LedgerError::InUse {
                    location,
                    holder: describe_holder(&text, &path),
                });
            }
            Err(TryLockError::Error(e)) => return Err(failed("lock", e)),
        }
        let record = holder_record(server);
        file.set_len(0)
            .and_then(|()| file.write_all(record.as_bytes()))
            .map_err(|e| failed("write", e))?;
        Ok((Self { _file: file }, created))
    }
}

/// What the holder writes into the lock file: `key=value` lines.
fn holder_record(server: &ServerId) -> String {
    let mut record = format!("pid={}\nserver={server}\n", std::process::id());
    if let Some(host) = host_name() {
        record.push_str(&format!("host={host}\n"));
    }
    record.push_str(&format!(
        "started={}\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    ));
    record
}

/// The machine's name, where it is cheap to learn.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The holder as the error names it, from the lock file's text: "another game process (pid …,
/// host …, server id …, started …)".
fn describe_holder(text: &str, lock: &Path) -> String {
    let field = |key: &str| {
        text.lines()
            .filter_map(|line| line.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let pid = field("pid");
    let who = if pid == Some(std::process::id().to_string()) {
        "another app in this process"
    } else {
        "another game process"
    };
    let parts: Vec<String> = [
        ("pid", pid),
        ("host", field("host")),
        ("server id", field("server")),
        ("started", field("started")),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| format!("{name} {v}")))
    .collect();
    if parts.is_empty() {
        format!(
            "{who} (its lock file {} does not say which)",
            lock.display()
        )
    } else {
        format!("{who} ({})", parts.join(", "))
    }
}
