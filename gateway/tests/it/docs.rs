//! The docs cannot drift from the code: the route table in docs/api.md is rendered from the
//! default gateway.toml and its descriptors (run with `SHOP_BLESS=1` to rewrite it after a
//! change), and every key the gateway.toml schema accepts (the `Raw*` structs of config/raw.rs) has
//! a row in docs/gateway.md's key reference, which lists no key the schema does not know.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use shop_gateway::config::{self, Access, Body};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const BEGIN: &str = "<!-- routes: generated from gateway.toml by gateway/tests/it/docs.rs -->\n";
const END: &str = "<!-- routes: end -->\n";

/// The route table as docs/api.md shows it.
fn route_table() -> String {
    let config = config::load(&Path::new(ROOT).join("gateway.toml")).unwrap();
    let mut out = String::from(
        "| method | path | who | request | success | gRPC method |\n|---|---|---|---|---|---|\n",
    );
    for r in &config.routes {
        // Fields bound by the path, a header or the raw body are not also the body's or query's.
        let mut bound: BTreeSet<&str> = r.template.params().collect();
        bound.extend(r.headers.iter().map(|h| h.field.name()));
        if let Body::Raw(f) = &r.body {
            bound.insert(f);
        }
        let others: Vec<String> = r
            .input()
            .fields()
            .map(|f| f.name().to_owned())
            .filter(|f| !bound.contains(f.as_str()))
            .collect();
        let mut parts: Vec<String> = Vec::new();
        match &r.body {
            Body::Whole if others.is_empty() => parts.push("JSON body: `{}`".to_owned()),
            Body::Whole => parts.push(format!("JSON body: {}", code_list(&others))),
            Body::Field(f) => parts.push(format!("JSON body: the `{f}` message")),
            Body::Raw(f) => parts.push(format!("body: raw bytes into `{f}`")),
            Body::None => {}
        }
        if matches!(r.body, Body::None | Body::Raw(_)) && !others.is_empty() {
            parts.push(format!("query: {}", code_list(&others)));
        }
        for h in &r.headers {
            parts.push(format!("header `{}` into `{}`", h.header, h.field.name()));
        }
        let request = if parts.is_empty() {
            "-".to_owned()
        } else {
            parts.join("; ")
        };
        let who = match r.access {
            Access::Public => "anyone",
            Access::User => "token",
            Access::Admin => "admin token",
        };
        out.push_str(&format!(
            "| {} | `{}` | {who} | {request} | {} | `{}` |\n",
            r.method,
            r.template.as_str(),
            r.status,
            r.rpc.full_name()
        ));
    }
    out
}

fn code_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn the_api_reference_lists_the_default_files_routes() {
    let path = Path::new(ROOT).join("docs/api.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(BEGIN).expect("docs/api.md lost its routes:begin marker") + BEGIN.len();
    let end = start
        + doc[start..]
            .find(END)
            .expect("docs/api.md lost its routes:end marker");
    let want = route_table();
    if doc[start..end] != want {
        if std::env::var_os("SHOP_BLESS").is_some() {
            std::fs::write(&path, format!("{}{want}{}", &doc[..start], &doc[end..])).unwrap();
            return;
        }
        panic!(
            "docs/api.md's route table is not what gateway.toml says; run \
             `SHOP_BLESS=1 cargo test -p shop-gateway --test it docs` to rewrite it. Expected:\n{want}"
        );
    }
}

/// Field names of each `struct Raw*` in config/raw.rs.
fn schema_keys() -> BTreeMap<String, Vec<String>> {
    let source = std::fs::read_to_string(Path::new(ROOT).join("gateway/src/config/raw.rs")).unwrap();
    let mut structs = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in source.lines() {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("pub(super) struct Raw")
            .and_then(|l| l.strip_suffix(" {"))
        {
            current = Some((name.to_owned(), Vec::new()));
        } else if line == "}" {
            if let Some((name, fields)) = current.take() {
                structs.insert(name, fields);
            }
        } else if let Some((_, fields)) = &mut current
            && let Some((field, _)) = line.split_once(':')
            && !line.starts_with("//")
            && !line.starts_with('#')
        {
            fields.push(field.trim().trim_start_matches("pub(super) ").to_owned());
        }
    }
    structs
}

#[test]
fn the_key_reference_matches_the_schema() {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/gateway.md")).unwrap();
    let keys_at = doc
        .find("\n## Keys\n")
        .expect("docs/gateway.md lost its Keys section");
    let keys_end = keys_at
        + 1
        + doc[keys_at + 1..]
            .find("\n## ")
            .unwrap_or(doc.len() - keys_at - 1);
    let reference = &doc[keys_at..keys_end];
    // Which heading of the reference documents each raw struct; the file's top level and the
    // nested tables (tls, cors) are documented with their parents.
    let sections = [
        ("Gateway", "### `[gateway]`"),
        ("Descriptors", "### `[descriptors]`"),
        ("Auth", "### `[auth]`"),
        ("Listener", "### `[[listener]]`"),
        ("Tls", "### `[[listener]]`"),
        ("Cors", "### `[[listener]]`"),
        ("Upstream", "### `[upstream.NAME]`"),
        ("Limit", "### `[limit.NAME]`"),
        ("Breaker", "### `[breaker.NAME]`"),
        ("Route", "### `[[route]]`"),
        ("AccessLog", "### `[access_log]`"),
        ("Admin", "### `[admin]`"),
    ];
    let section = |heading: &str| {
        let at = reference
            .find(heading)
            .unwrap_or_else(|| panic!("no {heading} in docs/gateway.md"));
        let rest = &reference[at + heading.len()..];
        &rest[..rest.find("\n### ").unwrap_or(rest.len())]
    };
    let schema = schema_keys();
    let mut documented_somewhere = BTreeSet::new();
    for (raw, fields) in &schema {
        if raw == "File" {
            continue; // the tables themselves
        }
        let heading = sections
            .iter()
            .find(|(r, _)| r == raw)
            .unwrap_or_else(|| panic!("struct Raw{raw} has no section in this test's map"))
            .1;
        let text = section(heading);
        for f in fields {
            let row = if raw == "Tls" {
                format!("{f} = \"")
            } else {
                format!("| `{f}` |")
            };
            assert!(
                text.contains(&row),
                "{heading} in docs/gateway.md does not document `{f}` (struct Raw{raw})"
            );
            documented_somewhere.insert(f.clone());
        }
    }
    // And no row documents a key the schema does not have.
    for line in reference.lines().filter(|l| l.starts_with("| `")) {
        let key = line.trim_start_matches("| `").split('`').next().unwrap();
        assert!(
            documented_somewhere.contains(key),
            "docs/gateway.md documents `{key}`, which gateway.toml's schema does not accept"
        );
    }
}
