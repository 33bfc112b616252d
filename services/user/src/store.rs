//! All of the user service's SQL. Functions take a connection (run them through
//! `shop_kit::db::Db::call`); read-modify-write steps use immediate transactions so concurrent
//! registrations cannot both take a name.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use shop_auth::Role;
use shop_kit::db::Migration;

use crate::domain::{Changes, NewUser, User};
use crate::error::Error;

/// The schema, step by step. Never edit a released step; add the next one.
pub const MIGRATIONS: &[Migration] = &[Migration {
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
}];

const COLUMNS: &str = "id, username, email, full_name, role, created_at, updated_at";

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
    })
}

fn taken(conn: &Connection, column: &'static str, value: &str, except_id: i64) -> Result<bool, Error> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM users WHERE {column} = ?1 COLLATE NOCASE AND id != ?2)");
    Ok(conn.query_row(&sql, params![value, except_id], |r| r.get(0))?)
}

/// Inserts a user; `Error::Taken` names the field already in use.
pub fn insert(conn: &mut Connection, new: &NewUser, hash: &str, role: Role, now: i64) -> Result<User, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if taken(&tx, "username", &new.username, 0)? {
        return Err(Error::Taken("username"));
    }
    if taken(&tx, "email", &new.email, 0)? {
        return Err(Error::Taken("email"));
    }
    let user = tx.query_row(
        &format!(
            "INSERT INTO users (username, email, password_hash, full_name, role, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING {COLUMNS}"
        ),
        params![new.username, new.email, hash, new.full_name, role.as_str(), now],
        user_from_row,
    )?;
    tx.commit()?;
    Ok(user)
}

/// The live account and its hash for a login name: an email when it contains '@', else a
/// username.
pub fn find_for_login(conn: &Connection, login: &str) -> Result<Option<(User, String)>, Error> {
    let column = if login.contains('@') { "email" } else { "username" };
    let sql = format!(
        "SELECT {COLUMNS}, password_hash FROM users
         WHERE {column} = ?1 COLLATE NOCASE AND deleted_at IS NULL"
    );
    Ok(conn
        .query_row(&sql, [login], |r| Ok((user_from_row(r)?, r.get::<_, String>(7)?)))
        .optional()?)
}

/// A live (not deleted) account.
pub fn get(conn: &Connection, id: i64) -> Result<Option<User>, Error> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM users WHERE id = ?1 AND deleted_at IS NULL"),
            [id],
            user_from_row,
        )
        .optional()?)
}

pub fn password_hash(conn: &Connection, id: i64) -> Result<Option<String>, Error> {
    Ok(conn
        .query_row(
            "SELECT password_hash FROM users WHERE id = ?1 AND deleted_at IS NULL",
            [id],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn update(conn: &mut Connection, id: i64, changes: &Changes, now: i64) -> Result<User, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if get(&tx, id)?.is_none() {
        return Err(Error::NotFound);
    }
    if let Some(email) = &changes.email
        && taken(&tx, "email", email, id)?
    {
        return Err(Error::Taken("email"));
    }
    let user = tx.query_row(
        &format!(
            "UPDATE users SET
                email = coalesce(?2, email),
                full_name = coalesce(?3, full_name),
                password_hash = coalesce(?4, password_hash),
                updated_at = ?5
             WHERE id = ?1 RETURNING {COLUMNS}"
        ),
        params![id, changes.email, changes.full_name, changes.password_hash, now],
        user_from_row,
    )?;
    tx.commit()?;
    Ok(user)
}

/// Marks the account deleted; false when it was not live.
pub fn soft_delete(conn: &Connection, id: i64, now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE users SET deleted_at = ?2, updated_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
        params![id, now],
    )?;
    Ok(n == 1)
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
pub fn ensure_admin(
    conn: &mut Connection,
    new: &NewUser,
    hash: &str,
    now: i64,
) -> Result<AdminOutcome, Error> {
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
