//! The one writer of a [`Db`](super::Db): group commit.
//!
//! Every write of the process runs on one thread with one connection. The thread takes what
//! has queued up (up to [`MAX_BATCH`] writes), opens one immediate transaction, runs each write
//! inside its own savepoint (a write that fails is rolled back alone; the others keep theirs),
//! commits once, and only then answers every caller. With `synchronous = FULL` a commit costs
//! an fsync, so under load a batch of writes costs what one used to, and the rule that a caller
//! hears "done" only once its change is on disk still holds: nobody is answered before the
//! COMMIT returns, and if it fails every write of the batch reports the failure.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::DbError;

/// Writes committed together at most. Enough to take a burst of concurrent writers in one
/// fsync; small enough that the last in a batch does not wait long behind the others.
pub const MAX_BATCH: usize = 64;

/// A queued write: run it inside the batch, then tell its caller how the batch ended.
pub(super) trait Work: Send {
    /// Runs the write; true when it succeeded and its changes should be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: `committed` is the batch's fate.
    fn finish(self: Box<Self>, committed: Result<(), &DbError>);
}

/// One caller's write and the channel its answer goes back on.
pub(super) struct Pending<F, T, E> {
    pub f: Option<F>,
    pub out: Option<Result<T, E>>,
    pub reply: Option<oneshot::Sender<Result<T, E>>>,
    pub span: tracing::Span,
}

impl<F, T, E> Work for Pending<F, T, E>
where
    F: FnOnce(&Connection) -> Result<T, E> + Send,
    T: Send,
    E: From<DbError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let out = self.span.in_scope(|| catch_unwind(AssertUnwindSafe(|| f(conn))));
        let out = out.unwrap_or_else(|_| Err(E::from(DbError::Task("a write panicked".to_owned()))));
        let kept = out.is_ok();
        self.out = Some(out);
        kept
    }

    fn finish(mut self: Box<Self>, committed: Result<(), &DbError>) {
        let answer = match (self.out.take(), committed) {
            (Some(Ok(v)), Ok(())) => Ok(v),
            // Its own failure is the better answer: its changes were rolled back either way.
            (Some(Err(e)), _) => Err(e),
            (_, Err(e)) => Err(E::from(DbError::NotCommitted {
                busy: e.is_busy(),
                reason: e.to_string(),
            })),
            (None, Ok(())) => Err(E::from(DbError::Task("a write was not run".to_owned()))),
        };
        if let Some(reply) = self.reply.take() {
            // The caller may have gone (its request was cancelled); the write stands anyway.
            let _ = reply.send(answer);
        }
    }
}

/// The writer thread's loop: until every sender is gone, commit what is queued. `commits`
/// counts the batches that committed.
pub(super) fn run(conn: Connection, queue: mpsc::Receiver<Box<dyn Work>>, commits: Arc<AtomicU64>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let committed = commit(&conn, &mut batch);
        if committed.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        for w in batch {
            w.finish(committed.as_ref().map(|_| ()));
        }
    }
}

/// Runs a batch in one transaction. An error means nothing of the batch was kept.
fn commit(conn: &Connection, batch: &mut [Box<dyn Work>]) -> Result<(), DbError> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    match run_all(conn, batch) {
        Ok(()) => match conn.prepare_cached("COMMIT")?.execute([]) {
            Ok(_) => Ok(()),
            Err(e) => {
                rollback(conn);
                Err(e.into())
            }
        },
        Err(e) => {
            rollback(conn);
            Err(e)
        }
    }
}

fn run_all(conn: &Connection, batch: &mut [Box<dyn Work>]) -> Result<(), DbError> {
    for w in batch.iter_mut() {
        conn.prepare_cached("SAVEPOINT one_write")?.execute([])?;
        let kept = w.run(conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back under us (an I/O error, a full disk):
            // every write so far is gone, so the batch fails as a whole.
            return Err(DbError::Task(
                "the transaction was rolled back by SQLite during a write".to_owned(),
            ));
        }
        if !kept {
            conn.prepare_cached("ROLLBACK TO one_write")?.execute([])?;
        }
        conn.prepare_cached("RELEASE one_write")?.execute([])?;
    }
    Ok(())
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %e, "rolling back a failed batch failed");
    }
}
