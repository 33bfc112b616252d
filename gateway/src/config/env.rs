//! `${NAME}` and `${NAME:-default}` in gateway.toml's strings, replaced from the environment
//! (`shop_base::env_refs`) before the file is read into its tables, so secrets such as the
//! Consul token stay out of the file. A variable that is not set and has no default is a problem
//! naming the table and key that need it; so is a malformed reference.

use super::Problems;

/// Replaces references in every string of `value` (tables, arrays, nested), recording a
/// problem for each one that cannot be replaced. `at` is the path so far (`upstream.users`,
/// `route[3]`).
pub(super) fn expand(
    value: &mut toml::Value,
    at: &str,
    env: &impl Fn(&str) -> Option<String>,
    p: &mut Problems,
) {
    match value {
        toml::Value::String(s) => match shop_base::env_refs::expand(s, env) {
            Ok(std::borrow::Cow::Owned(text)) => *s = text,
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Err(e) => {
                let (place, key) = at.rsplit_once('.').unwrap_or(("file", at));
                p.add(place, key, e.to_string());
            }
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand(item, &format!("{at}[{i}]"), env, p);
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                expand(v, &path, env, p);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_replaced_and_missing_ones_named_by_key() {
        let mut v: toml::Value = toml::from_str(
            "[gateway]\nconsul_token = \"${TOKEN}\"\nconsul = \"http://${HOST:-127.0.0.1}:8500\"\n\
             [[route]]\npath = \"/a\"\nname = \"${NOPE}\"\n",
        )
        .unwrap();
        let env = |k: &str| (k == "TOKEN").then(|| "s3cret".to_owned());
        let mut p = Problems(Vec::new());
        expand(&mut v, "", &env, &mut p);
        assert_eq!(v["gateway"]["consul_token"].as_str(), Some("s3cret"));
        assert_eq!(v["gateway"]["consul"].as_str(), Some("http://127.0.0.1:8500"));
        assert_eq!(p.0.len(), 1, "{:?}", p.0);
        assert_eq!((p.0[0].place.as_str(), p.0[0].key.as_str()), ("route[0]", "name"));
        assert!(p.0[0].message.contains("NOPE"), "{}", p.0[0].message);
    }
}
