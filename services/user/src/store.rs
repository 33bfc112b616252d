//! All of the user service's SQL. Functions take a connection (run them through
//! `shop_kit::db::Db::call`); read-modify-write steps use immediate transactions so concurrent
//! registrations cannot both take a name.

use rusqlite::{Connection, OptionalExtension, Row, params};
use shop_auth::Role;
use shop_kit::db::Migration;

use crate::domain::{Changes, NewUser, User};
use crate::error::Error;

/// The schema, step by step. Never edit a released step; add the next one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "users",
        sql: "
        CREATE TABLE users (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            username      TEXT    NOT NULL,
            email         TEXT    NOT NULL,
            password_hash TEXT    NOT NULL,
            full_name     TEXT    NOT NULL DEFAULT '',
            role          TEXT    NOT NULL CHECK (role IN ('customer', 'admin')),
            created_at    INTEGER NOT NULL,
            updated_at    INTEGER NOT NULL,
            deleted_at    INTEGER
        ) STRICT;
        -- Usernames and emails are ASCII (domain rules), so NOCASE is exact case folding.
        -- Deleted accounts keep theirs: a name is never handed to someone else.
        CREATE UNIQUE INDEX users_username ON users (username COLLATE NOCASE);
        CREATE UNIQUE INDEX users_email ON users (email COLLATE NOCASE);
    ",
    },
    Migration {
        version: 2,
        name: "revocations",
        sql: "
            -- Written into tokens as `ver`; raised when the role changes.
            ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0 CHECK (token_version >= 0);
            -- Tokens of user_id below valid_from are refused (all of them for a deleted account).
            -- The feed verifiers poll (ListRevocations), in seq order.
            CREATE TABLE revocations (
                seq        INTEGER PRIMARY KEY AUTOINCREMENT,
                user_id    INTEGER NOT NULL,
                valid_from INTEGER NOT NULL CHECK (valid_from >= 0),
                reason     TEXT    NOT NULL CHECK (reason IN ('deleted', 'role changed')),
                created_at INTEGER NOT NULL
            ) STRICT;
            CREATE INDEX revocations_by_time ON revocations (created_at);
        ",
    },
    Migration {
        version: 3,
        name: "password changes",
        sql: "
            -- A token bucket per account for password changes (see take_password_change).
            CREATE TABLE password_changes (
                user_id     INTEGER PRIMARY KEY,
                available   INTEGER NOT NULL CHECK (available >= 0),
                refilled_at INTEGER NOT NULL
            ) STRICT;
        ",
    },
    Migration {
        version: 4,
        name: "password changes revoke tokens",
        sql: "
            -- A third reason. SQLite cannot change a CHECK in place: the table is rebuilt, its
            -- rows and ids kept, and its AUTOINCREMENT counter carried over, so that no id a
            -- verifier has already read is ever handed out again.
            CREATE TABLE revocations_v4 (
                seq        INTEGER PRIMARY KEY AUTOINCREMENT,
                user_id    INTEGER NOT NULL,
                valid_from INTEGER NOT NULL CHECK (valid_from >= 0),
                reason     TEXT    NOT NULL
                           CHECK (reason IN ('deleted', 'role changed', 'password changed')),
                created_at INTEGER NOT NULL
            ) STRICT;
            INSERT INTO revocations_v4 (seq, user_id, valid_from, reason, created_at)
                SELECT seq, user_id, valid_from, reason, created_at FROM revocations;
            DELETE FROM sqlite_sequence WHERE name = 'revocations_v4';
            INSERT INTO sqlite_sequence (name, seq) VALUES ('revocations_v4', max(
                coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'revocations'), 0),
                coalesce((SELECT max(seq) FROM revocations_v4), 0)));
            DROP TABLE revocations;
            ALTER TABLE revocations_v4 RENAME TO revocations;
            CREATE INDEX revocations_by_time ON revocations (created_at);
        ",
    },
];

/// Password changes an account may make in a burst; then one more per [`PASSWORD_CHANGE_EVERY_MS`].
/// Every attempt counts, a wrong `current_password` included, so a stolen token guesses the
/// current password at most this fast, and no account can keep the hash pool busy.
pub const PASSWORD_CHANGE_BURST: i64 = 5;
/// Ten minutes.
pub const PASSWORD_CHANGE_EVERY_MS: i64 = 10 * 60 * 1000;

/// The columns [`user_from_row`] reads, as a literal (so queries can be `concat!`ed constants).
macro_rules! columns {
    () => {
        "id, username, email, full_name, role, created_at, updated_at, token_version"
    };
}
const COLUMNS: &str = columns!();

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let role: String = row.get(4)?;
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        email: row.get(2)?,
        full_name: row.get(3)?,
        // The CHECK constraint admits only the two roles.
        role: Role::parse(&role).unwrap_or(Role::Customer),
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        // CHECK (token_version >= 0) keeps the conversion exact.
        token_version: u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
    })
}

fn taken(conn: &Connection, column: &'static str, value: &str, except_id: i64) -> Result<bool, Error> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM users WHERE {column} = ?1 COLLATE NOCASE AND id != ?2)");
    Ok(conn.query_row(&sql, params![value, except_id], |r| r.get(0))?)
}

/// Inserts a user; `Error::Taken` names the field already in use.
pub fn insert(conn: &Connection, new: &NewUser, hash: &str, role: Role, now: i64) -> Result<User, Error> {
    if taken(conn, "username", &new.username, 0)? {
        return Err(Error::Taken("username"));
    }
    if taken(conn, "email", &new.email, 0)? {
        return Err(Error::Taken("email"));
    }
    let user = conn.query_row(
        &format!(
            "INSERT INTO users (username, email, password_hash, full_name, role, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING {COLUMNS}"
        ),
        params![new.username, new.email, hash, new.full_name, role.as_str(), now],
        user_from_row,
    )?;
    Ok(user)
}

/// The live account and its hash for a login name: an email when it contains '@', else a
/// username.
pub fn find_for_login(conn: &Connection, login: &str) -> Result<Option<(User, String)>, Error> {
    let sql = if login.contains('@') {
        concat!(
            "SELECT ",
            columns!(),
            ", password_hash FROM users WHERE email = ?1 COLLATE NOCASE AND deleted_at IS NULL"
        )
    } else {
        concat!(
            "SELECT ",
            columns!(),
            ", password_hash FROM users WHERE username = ?1 COLLATE NOCASE AND deleted_at IS NULL"
        )
    };
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(stmt
        .query_row([login], |r| Ok((user_from_row(r)?, r.get::<_, String>(8)?)))
        .optional()?)
}

/// A live (not deleted) account.
pub fn get(conn: &Connection, id: i64) -> Result<Option<User>, Error> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE id = ?1 AND deleted_at IS NULL"
    ))?;
    Ok(stmt.query_row([id], user_from_row).optional()?)
}

pub fn password_hash(conn: &Connection, id: i64) -> Result<Option<String>, Error> {
    let mut stmt =
        conn.prepare_cached("SELECT password_hash FROM users WHERE id = ?1 AND deleted_at IS NULL")?;
    Ok(stmt.query_row([id], |r| r.get(0)).optional()?)
}

pub fn update(conn: &Connection, id: i64, changes: &Changes, now: i64) -> Result<User, Error> {
    if get(conn, id)?.is_none() {
        return Err(Error::NotFound);
    }
    if let Some(email) = &changes.email
        && taken(conn, "email", email, id)?
    {
        return Err(Error::Taken("email"));
    }
    // A new password raises the token version and revokes the older tokens in the same
    // transaction: whoever held the account before the change (a stolen token included) is
    // signed out, and the owner signs in again with the new password.
    let user = conn.query_row(
        &format!(
            "UPDATE users SET
                email = coalesce(?2, email),
                full_name = coalesce(?3, full_name),
                password_hash = coalesce(?4, password_hash),
                token_version = token_version + (?4 IS NOT NULL),
                updated_at = ?5
             WHERE id = ?1 AND (?6 IS NULL OR password_hash = ?6) RETURNING {COLUMNS}"
        ),
        params![
            id,
            changes.email,
            changes.full_name,
            changes.password_hash,
            now,
            changes.password_was
        ],
        user_from_row,
    );
    let user = match user.optional()? {
        Some(user) => user,
        // The row exists (checked above, in this transaction): its hash is no longer the one
        // the current password was checked against.
        None => return Err(Error::PasswordChangedMeanwhile),
    };
    if changes.password_hash.is_some() {
        revoke(conn, id, user.token_version, Revoked::PasswordChanged, now)?;
    }
    Ok(user)
}

/// Why a revocation was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Deleted,
    RoleChanged,
    PasswordChanged,
}

impl Revoked {
    fn as_str(self) -> &'static str {
        match self {
            Revoked::Deleted => "deleted",
            Revoked::RoleChanged => "role changed",
            Revoked::PasswordChanged => "password changed",
        }
    }
}

fn revoke(conn: &Connection, user_id: i64, valid_from: u64, why: Revoked, now: i64) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO revocations (user_id, valid_from, reason, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            user_id,
            i64::try_from(valid_from).unwrap_or(i64::MAX),
            why.as_str(),
            now
        ],
    )?;
    Ok(())
}

/// Marks the account deleted and revokes every token it has, in one transaction; false when it
/// was not live.
pub fn soft_delete(conn: &Connection, id: i64, now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE users SET deleted_at = ?2, updated_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
        params![id, now],
    )?;
    if n == 1 {
        revoke(conn, id, shop_auth::revoked::ALL_TOKENS, Revoked::Deleted, now)?;
    }
    Ok(n == 1)
}

/// What [`set_role`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// The role changed; tokens below `token_version` are revoked.
    Changed {
        id: i64,
        token_version: u64,
    },
    Unchanged {
        id: i64,
    },
    NoSuchUser,
}

/// Gives a live account (by username) another role, raising its token version and revoking its
/// older tokens in the same transaction.
pub fn set_role(conn: &Connection, username: &str, role: Role, now: i64) -> Result<RoleChange, Error> {
    let found: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, role FROM users WHERE username = ?1 COLLATE NOCASE AND deleted_at IS NULL",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((id, current)) = found else {
        return Ok(RoleChange::NoSuchUser);
    };
    if current == role.as_str() {
        return Ok(RoleChange::Unchanged { id });
    }
    let token_version: i64 = conn.query_row(
        "UPDATE users SET role = ?2, token_version = token_version + 1, updated_at = ?3
         WHERE id = ?1 RETURNING token_version",
        params![id, role.as_str(), now],
        |r| r.get(0),
    )?;
    let token_version = u64::try_from(token_version).unwrap_or(0);
    revoke(conn, id, token_version, Revoked::RoleChanged, now)?;
    Ok(RoleChange::Changed { id, token_version })
}

/// One row of the revocation feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationRow {
    pub seq: i64,
    pub user_id: i64,
    pub valid_from: u64,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Up to `limit` revocations after `after` that were made since `since` (older ones refuse no
/// live token).
pub fn revocations_after(
    conn: &Connection,
    after: i64,
    since: i64,
    limit: i64,
) -> Result<Vec<RevocationRow>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, user_id, valid_from, created_at FROM revocations
         WHERE seq > ?1 AND created_at >= ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![after, since, limit], |r| {
            Ok(RevocationRow {
                seq: r.get(0)?,
                user_id: r.get(1)?,
                valid_from: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                created_at: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Takes one password change from `user_id`'s bucket (a token bucket of
/// [`PASSWORD_CHANGE_BURST`], refilled one per [`PASSWORD_CHANGE_EVERY_MS`]); `Err(retry after,
/// in ms)` when it is empty. Shared by every instance through the database.
pub fn take_password_change(conn: &Connection, user_id: i64, now: i64) -> Result<Result<(), i64>, Error> {
    let (available, refilled_at): (i64, i64) = conn
        .query_row(
            "SELECT available, refilled_at FROM password_changes WHERE user_id = ?1",
            [user_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((PASSWORD_CHANGE_BURST, now));
    // Whole refills since the last one; a clock that went back refills nothing.
    let gained = (now - refilled_at).max(0) / PASSWORD_CHANGE_EVERY_MS;
    let mut available = (available + gained).min(PASSWORD_CHANGE_BURST);
    let refilled_at = if available == PASSWORD_CHANGE_BURST {
        now
    } else {
        refilled_at + gained * PASSWORD_CHANGE_EVERY_MS
    };
    let outcome = if available > 0 {
        available -= 1;
        Ok(())
    } else {
        Err(refilled_at + PASSWORD_CHANGE_EVERY_MS - now)
    };
    conn.execute(
        "INSERT INTO password_changes (user_id, available, refilled_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET available = ?2, refilled_at = ?3",
        params![user_id, available, refilled_at],
    )?;
    Ok(outcome)
}

/// What [`ensure_admin`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOutcome {
    Created(i64),
    AlreadyAdmin(i64),
    /// The name belongs to a customer; it is not promoted behind anyone's back.
    NameTakenByCustomer,
    EmailTaken,
}

/// Creates the admin account unless one with that username exists.
pub fn ensure_admin(conn: &Connection, new: &NewUser, hash: &str, now: i64) -> Result<AdminOutcome, Error> {
    let existing = conn
        .query_row(
            "SELECT id, role FROM users WHERE username = ?1 COLLATE NOCASE",
            [&new.username],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?;
    match existing {
        Some((id, role)) if role == "admin" => Ok(AdminOutcome::AlreadyAdmin(id)),
        Some(_) => Ok(AdminOutcome::NameTakenByCustomer),
        None => match insert(conn, new, hash, Role::Admin, now) {
            Ok(user) => Ok(AdminOutcome::Created(user.id)),
            Err(Error::Taken("email")) => Ok(AdminOutcome::EmailTaken),
            Err(Error::Taken(_)) => {
                // Created by a concurrent start between our read and insert.
                ensure_admin(conn, new, hash, now)
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("shop-user-{name}-{}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        path
    }

    fn revocations(conn: &Connection) -> Vec<(i64, i64, i64, String)> {
        let mut stmt = conn
            .prepare("SELECT seq, user_id, valid_from, reason FROM revocations ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn the_revocations_rebuild_keeps_rows_ids_and_the_counter() {
        let path = scratch("v3-to-v4");
        let mut conn = shop_kit::db::open_connection(&path).unwrap();
        shop_kit::db::migrate(&mut conn, &path, &MIGRATIONS[..3]).unwrap();
        conn.execute_batch(
            "INSERT INTO revocations (seq, user_id, valid_from, reason, created_at)
                 VALUES (4, 1, 2, 'role changed', 10), (5, 2, 9223372036854775807, 'deleted', 11);
             -- as if later rows had been handed out and removed
             UPDATE sqlite_sequence SET seq = 9 WHERE name = 'revocations';",
        )
        .unwrap();
        assert_eq!(shop_kit::db::migrate(&mut conn, &path, MIGRATIONS).unwrap(), 1);
        assert_eq!(
            revocations(&conn),
            vec![
                (4, 1, 2, "role changed".to_owned()),
                (5, 2, i64::MAX, "deleted".to_owned())
            ]
        );
        revoke(&conn, 3, 1, Revoked::PasswordChanged, 12).unwrap();
        assert_eq!(
            revocations(&conn)[2],
            (10, 3, 1, "password changed".to_owned()),
            "no id reused"
        );
        let indexed: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'revocations_by_time'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 1);
    }

    #[test]
    fn the_rebuild_never_counts_below_its_highest_id_nor_fails_when_empty() {
        for (rows, counter, next) in [("(7, 1, 1, 'deleted', 1)", Some(3), 8), ("", None, 1)] {
            let path = scratch(&format!("v4-counter-{next}"));
            let mut conn = shop_kit::db::open_connection(&path).unwrap();
            shop_kit::db::migrate(&mut conn, &path, &MIGRATIONS[..3]).unwrap();
            if !rows.is_empty() {
                conn.execute_batch(&format!(
                    "INSERT INTO revocations (seq, user_id, valid_from, reason, created_at) VALUES {rows};"
                ))
                .unwrap();
            }
            if let Some(c) = counter {
                // A counter edited by hand below the highest id.
                conn.execute(
                    "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'revocations'",
                    [c],
                )
                .unwrap();
            }
            shop_kit::db::migrate(&mut conn, &path, MIGRATIONS).unwrap();
            revoke(&conn, 2, 1, Revoked::PasswordChanged, 2).unwrap();
            assert_eq!(revocations(&conn).last().unwrap().0, next);
        }
    }

    #[test]
    fn a_new_password_revokes_older_tokens_and_nothing_else_does() {
        let path = scratch("password-revokes");
        let mut conn = shop_kit::db::open_connection(&path).unwrap();
        shop_kit::db::migrate(&mut conn, &path, MIGRATIONS).unwrap();
        let new = NewUser {
            username: "alice".to_owned(),
            email: "alice@example.org".to_owned(),
            full_name: String::new(),
        };
        let alice = insert(&conn, &new, "hash-1", Role::Customer, 1).unwrap();
        let name = Changes {
            full_name: Some("Alice".to_owned()),
            ..Changes::default()
        };
        assert_eq!(update(&conn, alice.id, &name, 2).unwrap().token_version, 0);
        assert!(revocations(&conn).is_empty(), "a new name signs no one out");
        let password = Changes {
            password_hash: Some("hash-2".to_owned()),
            ..Changes::default()
        };
        let changed = update(&conn, alice.id, &password, 3).unwrap();
        assert_eq!(changed.token_version, 1);
        assert_eq!(
            revocations(&conn),
            vec![(1, alice.id, 1, "password changed".to_owned())]
        );
        // A change checked against the hash the last one replaced lost the race: nothing moves.
        let late = Changes {
            password_hash: Some("hash-3".to_owned()),
            password_was: Some("hash-1".to_owned()),
            full_name: Some("Mallory".to_owned()),
            ..Changes::default()
        };
        assert!(matches!(
            update(&conn, alice.id, &late, 4),
            Err(Error::PasswordChangedMeanwhile)
        ));
        assert_eq!(password_hash(&conn, alice.id).unwrap().as_deref(), Some("hash-2"));
        assert_eq!(get(&conn, alice.id).unwrap().unwrap().full_name, "Alice");
        assert_eq!(revocations(&conn).len(), 1);
        let current = Changes {
            password_was: Some("hash-2".to_owned()),
            ..late
        };
        assert_eq!(update(&conn, alice.id, &current, 5).unwrap().token_version, 2);
    }

    #[test]
    fn password_changes_come_in_a_small_burst_then_slowly() {
        let path = std::env::temp_dir().join(format!("shop-user-pw-bucket-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut conn = shop_kit::db::open_connection(&path).unwrap();
        shop_kit::db::migrate(&mut conn, &path, MIGRATIONS).unwrap();
        let t0 = 1_000_000;
        for _ in 0..PASSWORD_CHANGE_BURST {
            assert_eq!(take_password_change(&conn, 7, t0).unwrap(), Ok(()));
        }
        assert_eq!(
            take_password_change(&conn, 7, t0).unwrap(),
            Err(PASSWORD_CHANGE_EVERY_MS)
        );
        assert_eq!(take_password_change(&conn, 8, t0).unwrap(), Ok(()), "per account");
        let later = t0 + PASSWORD_CHANGE_EVERY_MS + 5;
        assert_eq!(
            take_password_change(&conn, 7, later).unwrap(),
            Ok(()),
            "one refilled"
        );
        assert_eq!(
            take_password_change(&conn, 7, later).unwrap(),
            Err(PASSWORD_CHANGE_EVERY_MS - 5)
        );
        let much_later = t0 + 100 * PASSWORD_CHANGE_EVERY_MS;
        for _ in 0..PASSWORD_CHANGE_BURST {
            assert_eq!(take_password_change(&conn, 7, much_later).unwrap(), Ok(()));
        }
        assert!(
            take_password_change(&conn, 7, much_later).unwrap().is_err(),
            "never more than the burst"
        );
        let _ = std::fs::remove_file(&path);
    }
}
