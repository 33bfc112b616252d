//! `user-service`: starts the user service, creates an admin account, issues service tokens,
//! changes roles, or backs up the live database.
//!
//! ```text
//! user-service [--config FILE] [--host IP] [--port N] [--data-dir DIR] [--consul URL] [--log LEVEL]
//!              [--set key=value]... [--check]
//! user-service create-admin --username NAME [--email EMAIL] [same settings flags]
//! user-service issue-service-token --service NAME [--ttl 30d] [--out FILE] [same settings flags]
//! user-service set-role --username NAME --role admin|customer [same settings flags]
//! user-service backup --to FILE [--force] [same settings flags]
//! ```

use std::io::BufRead;
use std::process::ExitCode;

use shop_kit::config::{self, Flags};
use user_service::{AdminSeed, Config, SERVICE_NAME};

const USAGE: &str = "\
usage: user-service [SETTINGS] [--check]
       user-service create-admin --username NAME [--email EMAIL] [SETTINGS]
       user-service issue-service-token --service NAME [--ttl 30d] [--out FILE] [SETTINGS]
       user-service set-role --username NAME --role admin|customer [SETTINGS]
       user-service backup --to FILE [--force] [SETTINGS]

Settings (each also readable from the TOML file and from SHOP_<SECTION>_<KEY>):
  --config FILE      TOML settings file (or SHOP_CONFIG)
  --host IP          server.host      (default 127.0.0.1)
  --port N           server.port      (default 5001; 0 picks a free port)
  --data-dir DIR     data.dir         (default .run/data)
  --consul URL       consul.addr      (default http://127.0.0.1:8500; empty disables)
  --log LEVEL        log.level        (default info)
  --set KEY=VALUE    any other key, e.g. --set auth.token_ttl=2h
  --check            validate the settings and exit

Start-up admin: with SHOP_ADMIN_USER and SHOP_ADMIN_PASSWORD set (SHOP_ADMIN_EMAIL optional),
the service makes sure that admin account exists. create-admin reads the password from
SHOP_ADMIN_PASSWORD or, when unset, from the first line of standard input.

issue-service-token signs a token with role \"service\" for another shop service (the order
service uses one for its inventory calls) with the same keys, and writes it to FILE (mode 0600)
or prints it.

set-role gives an account another role (an operator's act: promote a customer, demote an
admin). The account's older tokens are revoked: the gateway and the services refuse them within
seconds.

backup copies user.db to FILE while the service runs (a consistent copy, made with SQLite's
online backup); it never replaces an existing FILE unless --force is given.";

fn main() -> ExitCode {
    let (config, flags, _logs): (Config, Flags, _) =
        match config::start(SERVICE_NAME, USAGE, |c: &Config| &c.common.log_level) {
            Ok(started) => started,
            Err(code) => return code,
        };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = match flags.rest.first().map(String::as_str) {
        None | Some("serve") => runtime.block_on(serve(config, &flags)),
        Some("create-admin") => runtime.block_on(create_admin(config, &flags)),
        Some("issue-service-token") => issue_service_token(&config, &flags),
        Some("set-role") => set_role(&config, &flags),
        Some("backup") => shop_kit::db::backup::command(&config.db_path(), &flags.rest[1..], USAGE),
        Some(other) => Err(format!("unknown argument {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{SERVICE_NAME}: {message}");
    ExitCode::FAILURE
}

fn env_admin() -> Option<AdminSeed> {
    let username = std::env::var("SHOP_ADMIN_USER").ok().filter(|s| !s.is_empty())?;
    let password = std::env::var("SHOP_ADMIN_PASSWORD")
        .ok()
        .filter(|s| !s.is_empty())?;
    let email = std::env::var("SHOP_ADMIN_EMAIL").unwrap_or_else(|_| format!("{username}@shop.example"));
    Some(AdminSeed {
        username,
        email,
        password,
    })
}

async fn serve(config: Config, flags: &Flags) -> Result<(), String> {
    if flags.rest.len() > 1 {
        return Err(format!("unexpected arguments {:?}\n\n{USAGE}", &flags.rest[1..]));
    }
    let listener = shop_kit::serve::bind(&config.common.host, config.common.port)
        .await
        .map_err(|e| e.to_string())?;
    user_service::run(config, env_admin(), listener, shop_kit::serve::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

fn issue_service_token(config: &Config, flags: &Flags) -> Result<(), String> {
    let mut service = None;
    let mut ttl = std::time::Duration::from_secs(30 * 86_400);
    let mut out = None;
    let mut args = flags.rest.iter().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--service" => service = args.next().cloned(),
            "--ttl" => {
                let text = args.next().ok_or("issue-service-token: --ttl needs a value")?;
                ttl = config::parse_duration(text).map_err(|e| format!("issue-service-token: --ttl: {e}"))?;
            }
            "--out" => out = args.next().cloned(),
            other => {
                return Err(format!(
                    "issue-service-token: unknown argument {other:?}\n\n{USAGE}"
                ));
            }
        }
    }
    let service = service.ok_or("issue-service-token: --service is required")?;
    if !shop_auth::is_service_name(&service) {
        return Err(format!(
            "issue-service-token: {service:?} is not a service name (lowercase letters, digits and '-')"
        ));
    }
    if ttl < std::time::Duration::from_secs(60) || ttl > std::time::Duration::from_secs(366 * 86_400) {
        return Err("issue-service-token: --ttl must be between 1m and 366d".to_owned());
    }
    let key = user_service::token::ensure_keys(&config.private_key_path(), &config.public_key_path())
        .map_err(|e| e.to_string())?;
    let signer = user_service::token::Signer::new(
        &key,
        config.tokens.issuer.clone(),
        config.tokens.audience.clone(),
        config.token_ttl,
    )
    .map_err(|e| e.to_string())?;
    let token = signer
        .issue_service(&service, ttl)
        .map_err(|e| format!("cannot sign: {e}"))?;
    match out {
        Some(path) => {
            user_service::token::write_secret(std::path::Path::new(&path), &token)
                .map_err(|e| e.to_string())?;
            eprintln!(
                "wrote a service token for {service} to {path} (valid {}s)",
                ttl.as_secs()
            );
        }
        None => println!("{token}"),
    }
    Ok(())
}

fn set_role(config: &Config, flags: &Flags) -> Result<(), String> {
    let mut username = None;
    let mut role = None;
    let mut args = flags.rest.iter().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--username" => username = args.next().cloned(),
            "--role" => role = args.next().cloned(),
            other => return Err(format!("set-role: unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    let username = username.ok_or("set-role: --username is required")?;
    let role = match role.as_deref() {
        Some("admin") => shop_auth::Role::Admin,
        Some("customer") => shop_auth::Role::Customer,
        Some(other) => {
            return Err(format!(
                "set-role: --role must be admin or customer, not {other:?}"
            ));
        }
        None => return Err("set-role: --role is required".to_owned()),
    };
    let mut conn = shop_kit::db::open_connection(&config.db_path()).map_err(|e| e.to_string())?;
    shop_kit::db::migrate(&mut conn, &config.db_path(), user_service::store::MIGRATIONS)
        .map_err(|e| e.to_string())?;
    let now = shop_kit::clock::now_millis();
    let changed = shop_kit::db::in_transaction(&mut conn, |c| {
        user_service::store::set_role(c, &username, role, now)
    });
    match changed.map_err(|e| e.to_string())? {
        user_service::store::RoleChange::Changed { id, token_version } => {
            eprintln!(
                "user {id} ({username}) is now {role}; tokens issued before (version < {token_version}) are revoked"
            );
            Ok(())
        }
        user_service::store::RoleChange::Unchanged { id } => {
            eprintln!("user {id} ({username}) is already {role}; nothing changed");
            Ok(())
        }
        user_service::store::RoleChange::NoSuchUser => {
            Err(format!("set-role: no live account named {username:?}"))
        }
    }
}

async fn create_admin(config: Config, flags: &Flags) -> Result<(), String> {
    let mut username = None;
    let mut email = None;
    let mut args = flags.rest.iter().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--username" => username = args.next().cloned(),
            "--email" => email = args.next().cloned(),
            other => return Err(format!("create-admin: unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    let username = username.ok_or("create-admin: --username is required")?;
    let email = email.unwrap_or_else(|| format!("{username}@shop.example"));
    let password = match std::env::var("SHOP_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("create-admin: cannot read the password from stdin: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let db = shop_kit::db::Db::open(&config.db_path(), user_service::store::MIGRATIONS, 1)
        .map_err(|e| e.to_string())?;
    let hasher = user_service::password::Hasher::new().map_err(|e| e.to_string())?;
    user_service::seed_admin(
        &db,
        &hasher,
        AdminSeed {
            username,
            email,
            password,
        },
    )
    .await
    .map_err(|e| e.to_string())
}
