//! Online backups: a consistent copy of a live database, made with SQLite's backup API while the
//! service keeps serving and writing (`<service> backup --to FILE`).
//!
//! How the copy stays consistent without getting in the service's way:
//! - one read transaction on the source pins a snapshot for the whole copy. In WAL mode a
//!   reader never blocks the writer, and a pinned snapshot keeps SQLite from restarting the
//!   copy from the first page each time the service commits (what a stepped backup does when
//!   another connection writes), so a busy service cannot keep a backup from finishing;
//! - pages are copied [`Pace::pages`] at a time with a pause between steps, so the copy's disk
//!   traffic takes turns with the service's commits (each an fsync) instead of crowding them;
//! - the copy goes to a hidden temporary file beside the target, is checked (`PRAGMA
//!   quick_check`), switched to a rollback journal (one self-contained file, no `-wal` beside
//!   it), synced, and only then takes the target's name: a backup file is either whole or
//!   absent, and an existing file is replaced only when asked.
//!
//! While the snapshot is pinned the service's WAL cannot be checkpointed past it, so the WAL
//! grows by what is written during the copy and shrinks at the next checkpoint after it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::BUSY_TIMEOUT;

/// How fast a backup copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Pages per step.
    pub pages: i32,
    /// Sleep between steps.
    pub pause: Duration,
}

impl Pace {
    /// 256 pages (1 MiB at SQLite's default 4 KiB page) per step and 2 ms between steps: a
    /// 1 GB database takes about 2 s of pauses on top of the copy itself, and the service's
    /// commits never queue behind more than a megabyte of the copy's writes.
    pub const DEFAULT: Pace = Pace {
        pages: 256,
        pause: Duration::from_millis(2),
    };
}

/// Why a backup was not made. Nothing is left at the target when it fails.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no database at {0}")]
    NoDatabase(PathBuf),
    #[error("{0} already exists (--force replaces it)")]
    Exists(PathBuf),
    #[error("{0} is the database itself")]
    SameFile(PathBuf),
    #[error("{0} does not name a file")]
    NotAFile(PathBuf),
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("copying {path} failed: {source}")]
    Copy {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the database stayed locked for {0:?}; try again")]
    Busy(Duration),
    #[error("the copy failed its integrity check: {0}")]
    Check(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A finished backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub from: PathBuf,
    pub to: PathBuf,
    pub pages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl fmt::Display for Copied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backed up {} to {} ({} pages, {} bytes) in {:.2} s",
            self.from.display(),
            self.to.display(),
            self.pages,
            self.bytes,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Copies the live database `db` to the file `to` at the default [`Pace`]; `force` allows
/// replacing an existing `to`.
pub fn backup(db: &Path, to: &Path, force: bool) -> Result<Copied, BackupError> {
    backup_paced(db, to, force, Pace::DEFAULT)
}

/// [`backup`] at a chosen pace.
pub fn backup_paced(db: &Path, to: &Path, force: bool, pace: Pace) -> Result<Copied, BackupError> {
    let started = Instant::now();
    if !db.is_file() {
        return Err(BackupError::NoDatabase(db.to_owned()));
    }
    if to.exists() {
        if is_same_file(db, to) {
            return Err(BackupError::SameFile(to.to_owned()));
        }
        if !force {
            return Err(BackupError::Exists(to.to_owned()));
        }
    }
    let partial = Partial::beside(to)?;
    let pages = copy(db, &partial.path, pace)?;
    seal(&partial.path)?;
    // No more readable than the database it copies (the user database holds password hashes).
    fs::metadata(db)
        .and_then(|m| fs::set_permissions(&partial.path, m.permissions()))
        .map_err(|source| BackupError::Io {
            path: partial.path.clone(),
            source,
        })?;
    publish(&partial.path, to, force)?;
    let bytes = fs::metadata(to)
        .map(|m| m.len())
        .map_err(|source| BackupError::Io {
            path: to.to_owned(),
            source,
        })?;
    Ok(Copied {
        from: db.to_owned(),
        to: to.to_owned(),
        pages,
        bytes,
        elapsed: started.elapsed(),
    })
}

fn is_same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The live database, opened without creating it and unable to write.
fn open_source(db: &Path) -> Result<Connection, BackupError> {
    let open = |source| BackupError::Open {
        path: db.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    conn.execute_batch("PRAGMA query_only = ON;").map_err(open)?;
    Ok(conn)
}

/// Copies every page of one snapshot of `db` into `partial`; returns the number of pages.
fn copy(db: &Path, partial: &Path, pace: Pace) -> Result<u64, BackupError> {
    let source = open_source(db)?;
    let failed = |source| BackupError::Copy {
        path: db.to_owned(),
        source,
    };
    let mut target = Connection::open(partial).map_err(|source| BackupError::Open {
        path: partial.to_owned(),
        source,
    })?;
    // The read that starts the transaction pins the snapshot every step copies from.
    source.execute_batch("BEGIN DEFERRED").map_err(failed)?;
    source
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))
        .map_err(failed)?;
    let pages = {
        let backup = Backup::new(&source, &mut target).map_err(failed)?;
        step_until_done(&backup, pace).map_err(|e| match e {
            Stepped::Failed(source) => failed(source),
            Stepped::Busy(waited) => BackupError::Busy(waited),
        })?;
        backup.progress().pagecount
    };
    source.execute_batch("COMMIT").map_err(failed)?;
    Ok(u64::try_from(pages).unwrap_or(0))
}

enum Stepped {
    Failed(rusqlite::Error),
    Busy(Duration),
}

/// Steps the backup to the end, pausing between steps; gives up when it stays locked for
/// longer than the busy timeout.
fn step_until_done(backup: &Backup<'_, '_>, pace: Pace) -> Result<(), Stepped> {
    let mut locked_since: Option<Instant> = None;
    loop {
        match backup.step(pace.pages.max(1)).map_err(Stepped::Failed)? {
            StepResult::Done => return Ok(()),
            StepResult::More => locked_since = None,
            // Busy, Locked (and whatever a later rusqlite adds): wait and try again.
            _ => {
                let since = *locked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > BUSY_TIMEOUT {
                    return Err(Stepped::Busy(since.elapsed()));
                }
            }
        }
        std::thread::sleep(pace.pause);
    }
}

/// Checks the copy, makes it one self-contained file (rollback journal, no `-wal`), and syncs
/// it to disk.
fn seal(partial: &Path) -> Result<(), BackupError> {
    let failed = |source| BackupError::Copy {
        path: partial.to_owned(),
        source,
    };
    {
        let conn = Connection::open(partial).map_err(failed)?;
        let verdict: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(failed)?;
        if verdict != "ok" {
            return Err(BackupError::Check(verdict));
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .map_err(failed)?;
        if mode != "delete" {
            return Err(BackupError::Check(format!(
                "the copy stayed in journal mode {mode}"
            )));
        }
    }
    let io = |source| BackupError::Io {
        path: partial.to_owned(),
        source,
    };
    fs::File::open(partial).and_then(|f| f.sync_all()).map_err(io)
}

/// Gives the finished copy its name: atomically replacing `to` when `force`, else only when no
/// file has appeared there meanwhile (a hard link fails on an existing name).
fn publish(partial: &Path, to: &Path, force: bool) -> Result<(), BackupError> {
    let io = |source| BackupError::Io {
        path: to.to_owned(),
        source,
    };
    if force {
        fs::rename(partial, to).map_err(io)?;
    } else {
        match fs::hard_link(partial, to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists(to.to_owned()));
            }
            // A filesystem without hard links: check, then rename.
            Err(_) if to.exists() => return Err(BackupError::Exists(to.to_owned())),
            Err(_) => fs::rename(partial, to).map_err(io)?,
        }
    }
    // Make the new name durable too. Best effort: some filesystems refuse to sync a folder.
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The temporary copy beside the target (`.<name>.<pid>.partial`), removed with its journal
/// files when dropped, whatever happened.
struct Partial {
    path: PathBuf,
}

impl Partial {
    fn beside(to: &Path) -> Result<Partial, BackupError> {
        let name = to
            .file_name()
            .ok_or_else(|| BackupError::NotAFile(to.to_owned()))?;
        let dir = to
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|source| BackupError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let partial = Partial {
            path: dir.join(format!(
                ".{}.{}.partial",
                name.to_string_lossy(),
                std::process::id()
            )),
        };
        partial.remove();
        Ok(partial)
    }

    fn remove(&self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = fs::remove_file(path);
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The `backup --to FILE [--force]` subcommand of a service binary: parses `rest`, copies `db`,
/// prints what was copied. Errors are sentences for the terminal (`usage` follows a bad argument).
pub fn command(db: &Path, rest: &[String], usage: &str) -> Result<(), String> {
    let args = Args::parse(rest).map_err(|e| format!("backup: {e}\n\n{usage}"))?;
    let copied = backup(db, &args.to, args.force).map_err(|e| format!("backup: {e}"))?;
    println!("{copied}");
    Ok(())
}

/// The arguments of a `backup` subcommand: `--to FILE [--force]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub to: PathBuf,
    pub force: bool,
}

/// Arguments a `backup` subcommand cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("--to FILE is required")]
    NoTarget,
    #[error("--to needs a file name")]
    EmptyTarget,
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
}

impl Args {
    /// Reads `--to FILE` (or `--to=FILE`) and `--force`, in any order.
    pub fn parse(args: &[String]) -> Result<Args, ArgsError> {
        let mut to = None;
        let mut force = false;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--to" => to = Some(args.next().ok_or(ArgsError::EmptyTarget)?.clone()),
                "--force" => force = true,
                other => match other.strip_prefix("--to=") {
                    Some(value) => to = Some(value.to_owned()),
                    None => return Err(ArgsError::Unexpected(other.to_owned())),
                },
            }
        }
        match to {
            None => Err(ArgsError::NoTarget),
            Some(t) if t.trim().is_empty() => Err(ArgsError::EmptyTarget),
            Some(t) => Ok(Args {
                to: PathBuf::from(t),
                force,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;
    use crate::db::{Migration, migrate, open_connection};

    /// Accounts whose balances always sum to 1,000,000 (each transfer moves money between two
    /// in one transaction), a row per transfer, and padding so the file spans many pages.
    const BANK: Migration = Migration {
        version: 1,
        name: "bank",
        sql: "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL) STRICT;
              CREATE TABLE transfers (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, pad TEXT NOT NULL) STRICT;
              WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
              INSERT INTO accounts SELECT i, 10000 FROM n;",
    };

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shop-kit-backup-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn bank(dir: &Path) -> PathBuf {
        let path = dir.join("bank.db");
        let mut conn = open_connection(&path).unwrap();
        migrate(&mut conn, &path, &[BANK]).unwrap();
        // About a megabyte of history, so a copy takes many steps.
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO transfers (amount, pad) SELECT 0, printf('%.300c', 'x') FROM n;",
        )
        .unwrap();
        path
    }

    fn transfer(conn: &mut Connection, i: i64) {
        let tx = conn.transaction().unwrap();
        let (from, to, amount) = (i % 100 + 1, (i * 7) % 100 + 1, i % 13);
        tx.execute(
            "UPDATE accounts SET balance = balance - ?2 WHERE id = ?1",
            [from, amount],
        )
        .unwrap();
        tx.execute(
            "UPDATE accounts SET balance = balance + ?2 WHERE id = ?1",
            [to, amount],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO transfers (amount, pad) VALUES (?1, ?2)",
            rusqlite::params![amount, "x".repeat(300)],
        )
        .unwrap();
        tx.commit().unwrap();
    }

    fn counts(path: &Path) -> (i64, i64) {
        let conn = Connection::open(path).unwrap();
        conn.query_row(
            "SELECT (SELECT sum(balance) FROM accounts), (SELECT count(*) FROM transfers)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    #[test]
    fn a_backup_under_steady_writes_is_one_consistent_snapshot() {
        let dir = scratch("writes");
        let db = bank(&dir);
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let writer = {
            let (db, stop, committed) = (db.clone(), Arc::clone(&stop), Arc::clone(&committed));
            std::thread::spawn(move || {
                let mut conn = open_connection(&db).unwrap();
                let mut i = 1_000;
                while !stop.load(Ordering::Relaxed) {
                    transfer(&mut conn, i);
                    committed.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            })
        };
        while committed.load(Ordering::SeqCst) < 20 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = counts(&db).1;
        let during = committed.load(Ordering::SeqCst);
        // Tiny steps: hundreds of them, each followed by a pause the writer uses. Without the
        // pinned snapshot every commit would restart the copy and it would not finish.
        let slow = Pace {
            pages: 2,
            pause: Duration::from_millis(1),
        };
        let to = dir.join("copies/bank-copy.db");
        let copied = backup_paced(&db, &to, false, slow).unwrap();
        let after = committed.load(Ordering::SeqCst);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();

        assert!(copied.pages > 100, "{copied}");
        assert!(
            after > during,
            "the writer committed during the copy ({during} -> {after})"
        );
        let (sum, transfers) = counts(&to);
        assert_eq!(sum, 1_000_000, "balances of one snapshot");
        assert!(
            transfers >= before,
            "every transfer committed before the backup began is in it"
        );
        let conn = Connection::open(&to).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!((mode.as_str(), version), ("delete", 1));
        drop(conn);
        let left: Vec<_> = fs::read_dir(dir.join("copies"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            ["bank-copy.db"],
            "one self-contained file, no temporary files"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_is_replaced_only_when_forced_and_a_missing_database_is_not_created() {
        let dir = scratch("replace");
        let db = bank(&dir);
        let to = dir.join("kept.db");
        fs::write(&to, "an older backup").unwrap();
        let refused = backup(&db, &to, false).unwrap_err();
        assert!(
            matches!(&refused, BackupError::Exists(p) if *p == to),
            "{refused}"
        );
        assert_eq!(fs::read_to_string(&to).unwrap(), "an older backup");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&db, fs::Permissions::from_mode(0o600)).unwrap();
        backup(&db, &to, true).unwrap();
        assert_eq!(counts(&to), (1_000_000, 3_000));
        assert_eq!(fs::metadata(&to).unwrap().permissions().mode() & 0o777, 0o600);

        assert!(matches!(backup(&db, &db, true), Err(BackupError::SameFile(_))));
        let missing = dir.join("never.db");
        let e = backup(&missing, &dir.join("x.db"), false).unwrap_err();
        assert_eq!(e.to_string(), format!("no database at {}", missing.display()));
        assert!(!missing.exists() && !dir.join("x.db").exists());
        assert!(matches!(
            backup(&db, Path::new("/"), true),
            Err(BackupError::NotAFile(_))
        ));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".partial"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn arguments() {
        let parse = |a: &[&str]| Args::parse(&a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let to = |p: &str, force| {
            Ok(Args {
                to: PathBuf::from(p),
                force,
            })
        };
        assert_eq!(parse(&["--to", "a.db"]), to("a.db", false));
        assert_eq!(parse(&["--force", "--to=b.db"]), to("b.db", true));
        assert_eq!(parse(&[]), Err(ArgsError::NoTarget));
        assert_eq!(parse(&["--to"]), Err(ArgsError::EmptyTarget));
        assert_eq!(parse(&["--to="]), Err(ArgsError::EmptyTarget));
        assert_eq!(
            parse(&["--to", "a", "--overwrite"]),
            Err(ArgsError::Unexpected("--overwrite".to_owned()))
        );
    }
}
