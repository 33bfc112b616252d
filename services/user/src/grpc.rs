//! The gRPC face of the user service: checks who is calling, translates protobuf to domain
//! values and back, and leaves rules to `domain` and SQL to `store`.

use std::sync::Arc;

use shop_auth::{Identity, Role, Verifier, revoked};
use shop_kit::clock::{now_millis, timestamp};
use shop_kit::db::Db;
use shop_proto::user::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::{self, Changes, User};
use crate::error::Error;
use crate::password::Hasher;
use crate::store;
use crate::token::Signer;

pub struct UserApi {
    pub db: Db,
    pub hasher: Hasher,
    pub signer: Arc<Signer>,
    pub verifier: Arc<Verifier>,
    /// What `verifier` refuses: revocations this instance records are learned at once, the
    /// others from the feed within a second.
    pub revocations: Arc<revoked::Revocations>,
}

fn to_pb(u: User) -> pb::User {
    pb::User {
        id: u.id,
        username: u.username,
        email: u.email,
        full_name: u.full_name,
        role: u.role.as_str().to_owned(),
        created_at: Some(timestamp(u.created_at)),
        updated_at: Some(timestamp(u.updated_at)),
    }
}

/// Revocations per answer of the feed.
const FEED_PAGE: i64 = 500;

/// The revocation feed after `after`, read from the database: up to [`FEED_PAGE`] revocations
/// made within [`revoked::KEEP_FOR`], and where to ask next.
pub async fn revocations_after(db: &Db, after: i64) -> Result<revoked::Batch, Error> {
    let keep_ms = i64::try_from(revoked::KEEP_FOR.as_millis()).unwrap_or(i64::MAX);
    let since = now_millis().saturating_sub(keep_ms);
    let rows = db
        .call(move |c| store::revocations_after(c, after, since, FEED_PAGE))
        .await?;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) == FEED_PAGE;
    let cursor = rows.last().map_or(after, |r| r.seq);
    let keep_secs = revoked::KEEP_FOR.as_secs();
    Ok(revoked::Batch {
        revocations: rows
            .iter()
            .map(|r| revoked::Revocation {
                user_id: r.user_id,
                valid_from: r.valid_from,
                until: u64::try_from(r.created_at / 1000).unwrap_or(0) + keep_secs,
            })
            .collect(),
        cursor,
        more,
    })
}

fn check_id(id: i64) -> Result<i64, Error> {
    if id > 0 {
        Ok(id)
    } else {
        Err(Error::invalid("id", "must be a positive user id"))
    }
}

impl UserApi {
    /// A revocation this instance just committed: refused here from now on, without waiting a
    /// poll of its own feed (which brings it to every other verifier within a second).
    fn revoked_here(&self, user_id: i64, valid_from: u64) {
        let now = u64::try_from(now_millis() / 1000).unwrap_or(0);
        self.revocations.learn(revoked::Revocation {
            user_id,
            valid_from,
            until: now + revoked::KEEP_FOR.as_secs(),
        });
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Identity, Error> {
        Ok(self.verifier.verify_metadata(req.metadata())?)
    }

    /// The caller, if allowed to act on account `id` (themself, or any account for an admin).
    fn caller_for<T>(&self, req: &Request<T>, id: i64) -> Result<Identity, Error> {
        let who = self.caller(req)?;
        check_id(id)?;
        if !who.may_act_for(id) {
            return Err(Error::Forbidden("you may only act on your own account"));
        }
        Ok(who)
    }

    /// The revocation feed after `after`: what `ListRevocations` answers, and what this service
    /// follows itself.
    pub async fn revocations_after(&self, after: i64) -> Result<revoked::Batch, Error> {
        revocations_after(&self.db, after).await
    }

    /// The hash of `password`, the new password of account `id`, when `who` may set it: the
    /// account itself must also give its current password (a stolen token alone must not be
    /// enough to take the account over), and gets back the stored hash it was checked against,
    /// which the write then requires. Every attempt that gets as far as hashing costs one of
    /// the caller's password changes first, a wrong current password included.
    async fn new_password(
        &self,
        who: &Identity,
        id: i64,
        password: String,
        current: Option<String>,
    ) -> Result<(String, Option<String>), Error> {
        domain::check_password("password", &password)?;
        let own = who.user_id == id;
        let current = current.unwrap_or_default();
        if own && current.is_empty() {
            return Err(Error::invalid(
                "current_password",
                "is required to change your password",
            ));
        }
        let caller = who.user_id;
        let taken = self
            .db
            .write(move |c| store::take_password_change(c, caller, now_millis()))
            .await?;
        if let Err(retry_after_ms) = taken {
            tracing::info!(
                user_id = id,
                by = caller,
                "password change refused: limit reached"
            );
            return Err(Error::TooManyPasswordChanges {
                retry_after_secs: u64::try_from(retry_after_ms).map_or(1, |ms| ms.div_ceil(1000)),
            });
        }
        let mut was = None;
        if own {
            let stored = self.db.read(move |c| store::password_hash(c, id)).await?;
            if stored.is_none() {
                return Err(Error::NotFound);
            }
            if !self.hasher.verify(current, stored.clone()).await? {
                return Err(Error::Forbidden("current_password is wrong"));
            }
            was = stored;
        }
        Ok((self.hasher.hash(password).await?, was))
    }

    async fn live_user(&self, id: i64) -> Result<User, Error> {
        self.db
            .read(move |c| store::get(c, id))
            .await?
            .ok_or(Error::NotFound)
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserApi {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::User>, Status> {
        let r = req.into_inner();
        let new = domain::check_registration(&r.username, &r.email, &r.password, &r.full_name)?;
        let hash = self.hasher.hash(r.password).await?;
        let user = self
            .db
            .write(move |c| store::insert(c, &new, &hash, Role::Customer, now_millis()))
            .await?;
        tracing::info!(user_id = user.id, username = %user.username, "registered");
        Ok(Response::new(to_pb(user)))
    }

    async fn login(&self, req: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let r = req.into_inner();
        if r.username.is_empty() {
            return Err(Error::invalid("username", "is required (a username or an email)").into());
        }
        if r.password.is_empty() {
            return Err(Error::invalid("password", "is required").into());
        }
        // Over-long input cannot match any account; cap it before it reaches SQL or argon2, and
        // still spend the same hashing time below.
        let login = if r.username.len() <= domain::EMAIL_MAX {
            r.username
        } else {
            String::new()
        };
        let password: String = r.password.chars().take(domain::PASSWORD_MAX + 1).collect();
        let found = self.db.read(move |c| store::find_for_login(c, &login)).await?;
        let (user, stored) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let ok = self.hasher.verify(password, stored).await?;
        let user = match user {
            Some(u) if ok => u,
            _ => {
                tracing::info!("login refused");
                return Err(Error::BadCredentials.into());
            }
        };
        let (access_token, expires_in) = self
            .signer
            .issue(user.id, user.role, user.token_version)
            .map_err(|e| Error::Internal(format!("cannot sign a token: {e}")))?;
        tracing::info!(user_id = user.id, role = %user.role, "logged in");
        Ok(Response::new(pb::LoginResponse {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in: i64::try_from(expires_in).unwrap_or(i64::MAX),
            user: Some(to_pb(user)),
        }))
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        let id = req.get_ref().id;
        self.caller_for(&req, id)?;
        Ok(Response::new(to_pb(self.live_user(id).await?)))
    }

    async fn update_user(&self, req: Request<pb::UpdateUserRequest>) -> Result<Response<pb::User>, Status> {
        let id = req.get_ref().id;
        let who = self.caller_for(&req, id)?;
        let r = req.into_inner();
        if r.email.is_none() && r.full_name.is_none() && r.password.is_none() {
            return Err(Error::invalid(
                "email",
                "nothing to change: send email, full_name and/or password",
            )
            .into());
        }
        let mut changes = Changes::default();
        if let Some(email) = r.email {
            domain::check_email(&email)?;
            changes.email = Some(email);
        }
        if let Some(name) = r.full_name {
            changes.full_name = Some(domain::check_full_name(&name)?);
        }
        if let Some(password) = r.password {
            let (hash, was) = self.new_password(&who, id, password, r.current_password).await?;
            changes.password_hash = Some(hash);
            changes.password_was = was;
        }
        let new_password = changes.password_hash.is_some();
        let user = self
            .db
            .write(move |c| store::update(c, id, &changes, now_millis()))
            .await?;
        if new_password {
            self.revoked_here(id, user.token_version);
        }
        tracing::info!(user_id = id, by = who.user_id, "updated");
        Ok(Response::new(to_pb(user)))
    }

    async fn delete_user(&self, req: Request<pb::DeleteUserRequest>) -> Result<Response<()>, Status> {
        let id = req.get_ref().id;
        let who = self.caller_for(&req, id)?;
        let deleted = self
            .db
            .write(move |c| store::soft_delete(c, id, now_millis()))
            .await?;
        // Its tokens are revoked in the same transaction; other verifiers learn it from the feed.
        if !deleted {
            return Err(Error::NotFound.into());
        }
        self.revoked_here(id, revoked::ALL_TOKENS);
        tracing::info!(user_id = id, by = who.user_id, "deleted");
        Ok(Response::new(()))
    }

    async fn list_revocations(
        &self,
        req: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        let after = req.get_ref().after.max(0);
        let batch = self.revocations_after(after).await?;
        Ok(Response::new(pb::ListRevocationsResponse {
            revocations: batch
                .revocations
                .iter()
                .map(|r| pb::Revocation {
                    user_id: r.user_id,
                    valid_from_version: i64::try_from(r.valid_from).unwrap_or(i64::MAX),
                    until: i64::try_from(r.until).unwrap_or(i64::MAX),
                })
                .collect(),
            cursor: batch.cursor,
            more: batch.more,
        }))
    }

    async fn validate_user(
        &self,
        req: Request<pb::ValidateUserRequest>,
    ) -> Result<Response<pb::ValidateUserResponse>, Status> {
        let id = req.get_ref().id;
        self.caller_for(&req, id)?;
        let user = self.db.read(move |c| store::get(c, id)).await?;
        Ok(Response::new(pb::ValidateUserResponse {
            id,
            valid: user.is_some(),
            role: user.map(|u| u.role.as_str().to_owned()).unwrap_or_default(),
        }))
    }
}
