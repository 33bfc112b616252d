//! SQLite, opened the same way by every service: one file per service, WAL journal, full
//! synchronous commits, foreign keys on, a busy timeout so that concurrent writers wait instead
//! of failing, and versioned migrations embedded in the binary (tracked in `PRAGMA
//! user_version`, so an old file upgrades on start and a newer one is refused).
//!
//! rusqlite is blocking, so there are three ways in, each with its own connections:
//! - [`Db::write`]: every change. Writes queue for one writer thread that commits them in
//!   batches, one fsync per batch (group commit, see `writer.rs`), and answers each caller once
//!   the batch is on disk.
//! - [`Db::read`]: point reads (a row by its key). They run at once on the calling thread with
//!   a read-only connection, because handing a read of a few microseconds to another thread and
//!   back costs several times the read (in WAL mode a reader never waits for a writer).
//! - [`Db::call`]: reads that scan (lists, searches, audits), on the blocking thread pool with a
//!   read-only pooled connection, inside the caller's tracing span, so async workers never wait
//!   on the disk.

pub mod backup;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{Semaphore, oneshot};

/// How long a connection waits for another writer before SQLite reports "database is locked".
/// Writes here are short transactions (milliseconds); five seconds absorbs bursts of hundreds of
/// concurrent writers on a slow disk while still surfacing a real deadlock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// One schema step. Versions start at 1 and increase by one; a released migration is never
/// edited, only followed by a new one.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the folder for database {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("migration {version} ({name}) failed: {source}")]
    Migrate {
        version: u32,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {path} is at schema version {found}, newer than this binary knows ({known}); \
         run a newer binary or restore a backup"
    )]
    TooNew { path: PathBuf, found: u32, known: u32 },
    #[error("migrations must be numbered 1, 2, 3, ...; {0} is out of place")]
    Numbering(u32),
    #[error("the database task stopped unexpectedly: {0}")]
    Task(String),
    /// The caller had gone before the work started (see `Db::call`).
    #[error("the query was not run: its caller has gone")]
    Interrupted,
    /// The batch a write was part of did not commit (its own part had succeeded); nothing of
    /// it was kept.
    #[error("the write was not committed: {reason}")]
    NotCommitted { busy: bool, reason: String },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl DbError {
    /// SQLite stayed locked past the busy timeout: a transient overload, worth a retry (services
    /// answer UNAVAILABLE), not a bug.
    pub fn is_busy(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            DbError::NotCommitted { busy, .. } => *busy,
            _ => false,
        }
    }
}

impl DbError {
    /// What a client sees for a storage failure, the same in every service: a database locked
    /// past the busy timeout is UNAVAILABLE (retry shortly); anything else is INTERNAL, with the
    /// details in the log and none in the answer.
    pub fn into_status(self, database: &str) -> tonic::Status {
        if self.is_busy() {
            tracing::warn!(error = %self, "database busy beyond the timeout");
            tonic::Status::unavailable(format!("the {database} database is busy; retry shortly"))
        } else {
            tracing::error!(error = %self, "database error");
            tonic::Status::internal("internal error")
        }
    }
}

/// Opens one connection with the shop's settings.
pub fn open_connection(path: &Path) -> Result<Connection, DbError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| DbError::Folder {
            path: path.to_owned(),
            source,
        })?;
    }
    let open = |source| DbError::Open {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(open)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    // WAL lets readers run beside the one writer. FULL makes every commit durable on disk
    // before the call returns: an acknowledged write survives a crash of the process or host.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )
    .map_err(open)?;
    // Plans that do not depend on bound values. Without this SQLite 3.54 re-prepares a
    // statement such as `WHERE order_id = ?1 ORDER BY product_id` on every new binding, which
    // undoes the statement cache (a third of a point read's CPU). None of our queries needs a
    // value-dependent plan: the LIKE searches start with `%` and partial indexes test literals.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(open)?;
    // Room for every statement shape a service runs (a list's filters and sorts make dozens),
    // so the cache keeps them prepared instead of evicting each other.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Brings the schema up to the newest migration. Safe when several processes start on the
/// same file at once: each step runs in an immediate transaction that re-reads the version.
/// Returns the number of steps applied.
pub fn migrate(conn: &mut Connection, path: &Path, migrations: &[Migration]) -> Result<u32, DbError> {
    for (i, m) in migrations.iter().enumerate() {
        if m.version as usize != i + 1 {
            return Err(DbError::Numbering(m.version));
        }
    }
    let known = migrations.len() as u32;
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(DbError::TooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    if found == known {
        return Ok(0);
    }
    // SQLite's way to rebuild a table (to change a constraint): foreign keys off for the
    // migration, `foreign_key_check` before each step commits. The pragma only takes effect
    // outside a transaction.
    conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    let result = apply(conn, migrations, found);
    conn.execute_batch("PRAGMA foreign_keys = ON")?;
    result
}

/// Applies the migrations after `found`, each in its own transaction.
fn apply(conn: &mut Connection, migrations: &[Migration], found: u32) -> Result<u32, DbError> {
    let mut applied = 0;
    for m in migrations.iter().filter(|m| m.version > found) {
        let step = |source| DbError::Migrate {
            version: m.version,
            name: m.name,
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(step)?;
        let now: u32 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(step)?;
        if now >= m.version {
            continue; // another process applied it while we waited
        }
        tx.execute_batch(m.sql).map_err(step)?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()
            .map_err(step)?;
        if let Some(table) = broken {
            return Err(step(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                Some(format!(
                    "the migration leaves rows of {table} without their parent"
                )),
            )));
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", m.version))
            .map_err(step)?;
        tx.commit().map_err(step)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        applied += 1;
    }
    Ok(applied)
}

/// Runs the write `f` in one immediate transaction on a connection of its own, committing when
/// it succeeds: for command-line tools that change a database without a running service.
pub fn in_transaction<T, E>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbError>,
{
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| E::from(e.into()))?;
    let out = f(&tx)?;
    tx.commit().map_err(|e| E::from(e.into()))?;
    Ok(out)
}

/// The connections to one database file: one writer, and read-only pools for point reads and
/// for scans.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Read-only connections for [`Db::call`], one per permit.
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    /// Read-only connections for [`Db::read`], taken without waiting.
    readers: Mutex<Vec<Connection>>,
    /// The writer thread's queue; the thread ends when the last `Db` is dropped.
    writes: mpsc::Sender<Box<dyn writer::Work>>,
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// A connection that cannot write: reads never take the write lock by mistake.
fn open_read_only(path: &Path) -> Result<Connection, DbError> {
    let conn = open_connection(path)?;
    conn.execute_batch("PRAGMA query_only = ON;")
        .map_err(|source| DbError::Open {
            path: path.to_owned(),
            source,
        })?;
    Ok(conn)
}

impl Db {
    /// Migrates the schema, starts the writer thread and opens `size` (at least one) read-only
    /// connections for each of [`Db::read`] and [`Db::call`].
    pub fn open(path: &Path, migrations: &[Migration], size: usize) -> Result<Db, DbError> {
        let mut first = open_connection(path)?;
        migrate(&mut first, path, migrations)?;
        let mut idle = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..size.max(1) {
            idle.push(open_read_only(path)?);
            readers.push(open_read_only(path)?);
        }
        let (writes, queue) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&commits);
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || writer::run(first, queue, counted))
            .map_err(|e| DbError::Task(format!("cannot start the writer thread: {e}")))?;
        Ok(Db {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                permits: Arc::new(Semaphore::new(idle.len())),
                idle: Mutex::new(idle),
                readers: Mutex::new(readers),
                writes,
                commits,
            }),
        })
    }

    /// Runs the write `f` in the next group commit and answers once it is on disk. `f` runs
    /// inside a transaction (its own savepoint): it must not begin or commit one itself. When
    /// `f` fails its changes are rolled back and the others' stand; when the batch cannot
    /// commit, every write in it fails with [`DbError::NotCommitted`].
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work = writer::Pending {
            f: Some(f),
            out: None,
            reply: Some(reply),
            span: tracing::Span::current(),
        };
        if self.inner.writes.send(Box::new(work)).is_err() {
            return Err(E::from(DbError::Task("the writer thread has stopped".to_owned())));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(E::from(DbError::Task("the writer thread has stopped".to_owned()))))
    }

    /// Transactions the writer has committed (each holds one or more writes).
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs the read `f` with a read-only connection on the blocking pool, in the current
    /// tracing span. For reads that scan; changes go through [`Db::write`].
    pub async fn call<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| E::from(DbError::Task("the pool is closed".to_owned())))?;
        let inner = Arc::clone(&self.inner);
        let span = tracing::Span::current();
        let armed = Interrupter::default();
        let mut guard = CallerGuard {
            interrupter: armed.clone(),
            finished: false,
        };
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .ok_or_else(|| DbError::Task("no idle connection behind a permit".to_owned()))?;
            // Back to the pool however `f` ends, a panic included: a lost connection would leave
            // a permit with nothing behind it, failing every later call that drew it.
            let conn = Lent {
                conn: Some(conn),
                pool: &inner.idle,
            };
            let Some(c) = conn.conn.as_ref() else {
                return Err(DbError::Task("connection vanished".to_owned()));
            };
            // Disarmed when this scope ends, a panic included, and so before the connection
            // goes back to its pool: a caller that leaves later cannot interrupt its next user.
            let Some(_armed) = armed.arm(c) else {
                return Err(DbError::Interrupted);
            };
            let out = span.in_scope(|| snapshot(c, f));
            Ok::<_, DbError>(out)
        })
        .await;
        // Finished: nothing left to stop. (Dropped before this line, the guard stops the work.)
        guard.finished = true;
        match joined {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => Err(E::from(e)),
            Err(e) => Err(E::from(DbError::Task(e.to_string()))),
        }
    }
}

impl Db {
    /// Runs a point read `f` at once, on the calling thread, with a read-only connection; when
    /// every reader is busy, on the blocking pool like [`Db::call`]. Keep `f` to lookups by key:
    /// anything that scans belongs in [`Db::call`].
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let conn = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(conn) = conn else {
            return self.call(move |c| f(c)).await;
        };
        let lent = Lent {
            conn: Some(conn),
            pool: &self.inner.readers,
        };
        match lent.conn.as_ref() {
            Some(c) => snapshot(c, f),
            None => Err(E::from(DbError::Task("connection vanished".to_owned()))),
        }
    }
}

/// Runs the read `f` in one read transaction, so that every query it makes sees the same
/// committed state (an order and its lines, a page and its total), and so that SQLite takes
/// and drops its WAL read lock once per read instead of once per statement: each is a pair of
/// `fcntl` calls, the largest single cost of a point read that runs several queries.
fn snapshot<T, E, F>(conn: &Connection, f: F) -> Result<T, E>
where
    F: FnOnce(&Connection) -> Result<T, E>,
    E: From<DbError>,
{
    let step = |sql: &str| -> Result<(), DbError> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    if !conn.is_autocommit() {
        // Left open by a read that could not end it (see `Lent`): end it now, or BEGIN fails.
        let _ = conn.execute_batch("ROLLBACK");
    }
    step("BEGIN DEFERRED").map_err(E::from)?;
    let out = f(conn);
    // Read-only, so ending it either way keeps nothing; an interrupted read may already have
    // ended it, and a connection must never go back to its pool inside a transaction.
    let end = if out.is_ok() {
        step("COMMIT")
    } else {
        step("ROLLBACK")
    };
    match (out, end) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(E::from(e)),
        (Err(e), _) => Err(e),
    }
}

/// What a running scan's caller and its blocking task share.
#[derive(Default)]
struct Watch {
    handle: Option<rusqlite::InterruptHandle>,
    gone: bool,
}

/// Stops a scan whose caller has gone: when the future of [`Db::call`] is dropped (the client
/// cancelled, a deadline passed), the statement running for it is interrupted (its closure
/// ends with SQLITE_INTERRUPT), and a closure that has not started yet does not start. The
/// blocking task disarms it, under the same lock, before the connection goes back to the pool,
/// so an interrupt never reaches another caller's statement.
#[derive(Clone, Default)]
struct Interrupter(Arc<Mutex<Watch>>);

impl Interrupter {
    /// Before the closure runs; `None` when its caller has already gone. The interrupt handle
    /// is dropped with the returned guard.
    fn arm(&self, conn: &Connection) -> Option<Armed<'_>> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if w.gone {
            return None;
        }
        w.handle = Some(conn.get_interrupt_handle());
        Some(Armed(self))
    }

    fn caller_gone(&self) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.gone = true;
        if let Some(handle) = w.handle.take() {
            handle.interrupt();
            tracing::info!("query interrupted: its caller has gone");
        }
    }
}

/// While it lives, the caller's leaving interrupts the connection it was armed with.
struct Armed<'a>(&'a Interrupter);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner()).handle.take();
    }
}

/// Held by the caller of [`Db::call`]: dropped before the call finished, it stops the work.
struct CallerGuard {
    interrupter: Interrupter,
    finished: bool,
}

impl Drop for CallerGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.interrupter.caller_gone();
        }
    }
}

/// A pooled connection on loan; returned to the pool when dropped.
struct Lent<'a> {
    conn: Option<Connection>,
    pool: &'a Mutex<Vec<Connection>>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // A read that panicked inside its snapshot left its read transaction open: end it,
            // or the connection would pin an old snapshot and refuse the next BEGIN.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Migration = Migration {
        version: 1,
        name: "notes",
        sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL) STRICT;",
    };
    const V2: Migration = Migration {
        version: 2,
        name: "note authors",
        sql: "ALTER TABLE notes ADD COLUMN author TEXT NOT NULL DEFAULT 'unknown';",
    };

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shop-kit-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        path
    }

    #[test]
    fn an_old_database_upgrades_and_keeps_its_rows() {
        let path = scratch("upgrade.db");
        {
            let mut conn = open_connection(&path).unwrap();
            assert_eq!(migrate(&mut conn, &path, &[V1]).unwrap(), 1);
            conn.execute("INSERT INTO notes (body) VALUES ('kept')", [])
                .unwrap();
        }
        let mut conn = open_connection(&path).unwrap();
        assert_eq!(migrate(&mut conn, &path, &[V1, V2]).unwrap(), 1);
        let (body, author): (String, String) = conn
            .query_row("SELECT body, author FROM notes", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((body.as_str(), author.as_str()), ("kept", "unknown"));
        assert_eq!(
            migrate(&mut conn, &path, &[V1, V2]).unwrap(),
            0,
            "second run is a no-op"
        );
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn a_migration_that_orphans_rows_is_refused_whole() {
        let path = scratch("orphans.db");
        let mut conn = open_connection(&path).unwrap();
        let parents = Migration {
            version: 1,
            name: "parents",
            sql: "CREATE TABLE p (id INTEGER PRIMARY KEY);
                  CREATE TABLE c (p_id INTEGER NOT NULL REFERENCES p (id));
                  INSERT INTO p VALUES (1); INSERT INTO c VALUES (1);",
        };
        let drop_parent = Migration {
            version: 2,
            name: "drop a parent",
            sql: "DELETE FROM p;",
        };
        migrate(&mut conn, &path, &[parents]).unwrap();
        let e = migrate(&mut conn, &path, &[parents, drop_parent]).unwrap_err();
        assert!(e.to_string().contains("without their parent"), "{e}");
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM p", [], |r| r.get(0))
            .unwrap();
        assert_eq!((version, kept), (1, 1), "rolled back");
        let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        assert_eq!(fk, 1, "foreign keys are back on");
    }

    #[test]
    fn a_newer_database_is_refused_and_numbering_is_checked() {
        let path = scratch("newer.db");
        let mut conn = open_connection(&path).unwrap();
        migrate(&mut conn, &path, &[V1, V2]).unwrap();
        assert!(matches!(
            migrate(&mut conn, &path, &[V1]),
            Err(DbError::TooNew {
                found: 2,
                known: 1,
                ..
            })
        ));
        assert!(matches!(
            migrate(&mut conn, &path, &[V2]),
            Err(DbError::Numbering(2))
        ));
    }

    #[test]
    fn a_failing_migration_leaves_the_version_alone() {
        let path = scratch("failing.db");
        let broken = Migration {
            version: 2,
            name: "broken",
            sql: "CREATE TABLE ok (x INTEGER); THIS IS NOT SQL;",
        };
        let mut conn = open_connection(&path).unwrap();
        assert!(matches!(
            migrate(&mut conn, &path, &[V1, broken]),
            Err(DbError::Migrate { version: 2, .. })
        ));
        let v: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 1);
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'ok'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(tables, 0, "the half-applied step was rolled back");
    }

    #[test]
    fn storage_failures_map_to_one_status_everywhere() {
        let busy = DbError::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(5), None));
        let status = busy.into_status("user");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "the user database is busy; retry shortly");
        let other = DbError::Task("boom: /secret/path".to_owned()).into_status("user");
        assert_eq!(
            (other.code(), other.message()),
            (tonic::Code::Internal, "internal error")
        );
    }

    #[tokio::test]
    async fn a_panicking_call_gives_its_connection_back() {
        let path = scratch("panic.db");
        let db = Db::open(&path, &[V1], 1).unwrap();
        let panicked = db
            .call(|_conn| -> Result<(), DbError> { panic!("a bug in a closure") })
            .await;
        assert!(matches!(panicked, Err(DbError::Task(_))));
        // The single connection is back: the next call works.
        let n: i64 = db
            .call(|conn| Ok::<_, DbError>(conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn point_reads_run_in_place_and_cannot_write() {
        let path = scratch("read.db");
        let db = Db::open(&path, &[V1], 1).unwrap();
        db.write(|c| Ok::<_, DbError>(c.execute("INSERT INTO notes (body) VALUES ('seen')", [])?))
            .await
            .unwrap();
        let body: String = db
            .read(|c| Ok::<_, DbError>(c.query_row("SELECT body FROM notes", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(body, "seen");
        let write = db
            .read(|c| Ok::<_, DbError>(c.execute("DELETE FROM notes", [])?))
            .await;
        assert!(write.is_err(), "a reader's connection is read-only");
    }

    #[tokio::test]
    async fn a_read_sees_one_snapshot_and_a_panic_does_not_pin_it() {
        let path = scratch("snapshot.db");
        let db = Db::open(&path, &[V1], 1).unwrap();
        let writer = path.clone();
        let (before, after) = db
            .read(move |c| {
                let n =
                    |c: &Connection| c.query_row("SELECT count(*) FROM notes", [], |r| r.get::<_, i64>(0));
                let before = n(c)?;
                // Another connection commits between the read's two queries.
                let other = open_connection(&writer)?;
                other.execute("INSERT INTO notes (body) VALUES ('between')", [])?;
                Ok::<_, DbError>((before, n(c)?))
            })
            .await
            .unwrap();
        assert_eq!(
            (before, after),
            (0, 0),
            "both queries see the state the read began with"
        );
        let panicked = tokio::spawn({
            let db = db.clone();
            async move {
                db.read(|c| -> Result<(), DbError> {
                    c.query_row("SELECT count(*) FROM notes", [], |r| r.get::<_, i64>(0))?;
                    panic!("a bug in a read")
                })
                .await
            }
        })
        .await;
        assert!(panicked.is_err());
        open_connection(&path)
            .unwrap()
            .execute("INSERT INTO notes (body) VALUES ('later')", [])
            .unwrap();
        // The only reader is back, outside any transaction, and sees the newest commit.
        let n: i64 = db
            .read(|c| Ok::<_, DbError>(c.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 2);
    }

    fn count(db: &Db) -> i64 {
        let conn = open_connection(db.path()).unwrap();
        conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_together_and_a_failing_one_is_undone_alone() {
        let path = scratch("group.db");
        let db = Db::open(&path, &[V1], 2).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(move |c| {
                    c.execute("INSERT INTO notes (body) VALUES (?1)", [format!("n{i}")])?;
                    match i % 10 {
                        // Wrote, then failed: its row must not survive.
                        3 => Err(DbError::Task(format!("refused {i}"))),
                        7 => panic!("a bug in write {i}"),
                        _ => Ok(i),
                    }
                })
                .await
            }));
        }
        let mut ok = 0;
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(n) => {
                    assert_eq!(n, i);
                    ok += 1;
                }
                Err(e) => assert!(matches!(e, DbError::Task(_)), "write {i}: {e}"),
            }
        }
        assert_eq!(ok, 160);
        // Answered only after the commit: a new connection sees every kept row, and no other.
        assert_eq!(count(&db), 160);
        let conn = open_connection(&path).unwrap();
        let stray: i64 = conn
            .query_row(
                "SELECT count(*) FROM notes WHERE body IN ('n3', 'n7', 'n193', 'n197')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stray, 0);
        assert!(
            db.commits() < 200,
            "200 queued writes took {} commits",
            db.commits()
        );
    }

    #[tokio::test]
    async fn a_write_cannot_open_its_own_transaction_and_the_writer_lives_on() {
        let path = scratch("nested.db");
        let db = Db::open(&path, &[V1], 1).unwrap();
        let nested = db
            .write(|c| Ok::<_, DbError>(c.execute_batch("BEGIN IMMEDIATE")?))
            .await;
        assert!(nested.is_err(), "a write runs inside the batch's transaction");
        db.write(|c| Ok::<_, DbError>(c.execute("INSERT INTO notes (body) VALUES ('after')", [])?))
            .await
            .unwrap();
        assert_eq!(count(&db), 1);
        let scan = db
            .call(|c| Ok::<_, DbError>(c.execute("DELETE FROM notes", [])?))
            .await;
        assert!(scan.is_err(), "call's connections are read-only");
    }

    #[test]
    fn a_cached_statement_is_prepared_once_whatever_it_is_bound_to() {
        let path = scratch("plans.db");
        let mut conn = open_connection(&path).unwrap();
        migrate(&mut conn, &path, &[V1, V2]).unwrap();
        conn.execute_batch(
            "CREATE INDEX notes_by_author ON notes (author, body);
             INSERT INTO notes (body, author) VALUES ('a', 'x'), ('b', 'y'), ('c', 'x');",
        )
        .unwrap();
        // The shape that SQLite would otherwise re-plan on every binding: an equality on an
        // index's first column with ORDER BY its next one.
        let sql = "SELECT body FROM notes WHERE author = ?1 ORDER BY body";
        for author in ["x", "y", "x", "z", "y"] {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            let _: Vec<String> = stmt
                .query_map([author], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scan_whose_caller_has_gone_is_interrupted() {
        let path = scratch("interrupt.db");
        let db = Db::open(&path, &[V1], 1).unwrap();
        // Hours of counting, if nothing stops it.
        let endless = db.call(|c| {
            Ok::<i64, DbError>(c.query_row(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1e12) SELECT count(*) FROM n",
                [],
                |r| r.get(0),
            )?)
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(200), endless)
                .await
                .is_err(),
            "still counting when its caller gave up"
        );
        // The only connection is free again because the count stopped, not because it ended.
        let next = db.call(|c| Ok::<i64, DbError>(c.query_row("SELECT 7", [], |r| r.get(0))?));
        let answer = tokio::time::timeout(Duration::from_secs(30), next)
            .await
            .expect("the abandoned scan still holds the connection");
        assert_eq!(answer.unwrap(), 7);
    }
}
