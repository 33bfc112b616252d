//! Routing by method and path template. Templates are `/literal/{param}/...`; at each segment a
//! literal beats a parameter, so `POST /api/users/login` wins over `/api/users/{id}`. Two routes
//! with the same method and shape collide; two where each is more specific somewhere are
//! ambiguous; both are configuration errors. A path that matches no template is 404; one that
//! matches only other methods' templates is 405 with the methods that would work.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("must start with '/', got {0:?}")]
    NotAbsolute(String),
    #[error("has an empty segment (\"//\" or a trailing '/')")]
    EmptySegment,
    #[error("{{{0}}} is not a parameter name (lowercase letters, digits, '_')")]
    BadParam(String),
    #[error("{{{0}}} appears twice")]
    DuplicateParam(String),
    #[error("segment {0:?} may hold only letters, digits and -._~ (or be a {{param}})")]
    BadLiteral(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| TemplateError::NotAbsolute(text.to_owned()))?;
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for seg in rest.split('/') {
                if seg.is_empty() {
                    return Err(TemplateError::EmptySegment);
                }
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    let ok = name
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                        && name
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if !ok {
                        return Err(TemplateError::BadParam(name.to_owned()));
                    }
                    if segments.contains(&Segment::Param(name.to_owned())) {
                        return Err(TemplateError::DuplicateParam(name.to_owned()));
                    }
                    segments.push(Segment::Param(name.to_owned()));
                } else if seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
                {
                    segments.push(Segment::Literal(seg.to_owned()));
                } else {
                    return Err(TemplateError::BadLiteral(seg.to_owned()));
                }
            }
        }
        Ok(Template {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The raw (still percent-encoded) parameter values if `path` matches.
    fn capture<'p>(&self, path: &[&'p str]) -> Option<Vec<(&str, &'p str)>> {
        if path.len() != self.segments.len() {
            return None;
        }
        let mut out = Vec::new();
        for (seg, value) in self.segments.iter().zip(path) {
            match seg {
                Segment::Literal(l) if l == value => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if value.is_empty() => return None,
                Segment::Param(name) => out.push((name.as_str(), *value)),
            }
        }
        Some(out)
    }

    /// Literal-ness per segment, left to right: the larger is the more specific.
    fn specificity(&self) -> Vec<bool> {
        self.segments
            .iter()
            .map(|s| matches!(s, Segment::Literal(_)))
            .collect()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Pairs of routes (by name) that cannot coexist, with the reason phrase ("collides with",
/// "is ambiguous with").
pub fn conflicts<'a>(
    routes: impl Iterator<Item = (&'a str, &'a str, &'a Template)>,
) -> Vec<(String, String, &'static str)> {
    let routes: Vec<_> = routes.collect();
    let mut out = Vec::new();
    for (i, (an, am, at)) in routes.iter().enumerate() {
        for (bn, bm, bt) in &routes[i + 1..] {
            if am != bm || at.segments.len() != bt.segments.len() {
                continue;
            }
            let (mut a_more, mut b_more, mut disjoint) = (false, false, false);
            for (x, y) in at.segments.iter().zip(&bt.segments) {
                match (x, y) {
                    (Segment::Literal(p), Segment::Literal(q)) if p != q => disjoint = true,
                    (Segment::Literal(_), Segment::Param(_)) => a_more = true,
                    (Segment::Param(_), Segment::Literal(_)) => b_more = true,
                    _ => {}
                }
            }
            if disjoint {
                continue;
            }
            match (a_more, b_more) {
                (false, false) => out.push(((*an).to_owned(), (*bn).to_owned(), "collides with")),
                (true, true) => out.push(((*an).to_owned(), (*bn).to_owned(), "is ambiguous with")),
                _ => {}
            }
        }
    }
    out
}

/// What a request's method and path found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The route's index and its decoded parameters.
    Route(usize, Vec<(String, String)>),
    /// The path exists for these methods only.
    MethodNotAllowed(Vec<String>),
    NotFound,
    /// A parameter is not valid percent-encoded UTF-8.
    BadParam(String),
}

/// The best match so far while scanning the routes.
struct Candidate<'t, 'p> {
    index: usize,
    captured: Vec<(&'t str, &'p str)>,
    specificity: Vec<bool>,
}

/// Routes by method and template, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<(String, Template)>,
}

impl Router {
    pub fn new(routes: impl IntoIterator<Item = (String, Template)>) -> Router {
        Router {
            routes: routes.into_iter().collect(),
        }
    }

    pub fn find(&self, method: &str, path: &str) -> Found {
        let path = path.split('?').next().unwrap_or("");
        let parts: Vec<&str> = match path.strip_prefix('/') {
            Some("") => Vec::new(),
            Some(rest) => rest.split('/').collect(),
            None => return Found::NotFound,
        };
        let mut best: Option<Candidate<'_, '_>> = None;
        let mut allowed: Vec<String> = Vec::new();
        for (i, (m, t)) in self.routes.iter().enumerate() {
            let Some(captured) = t.capture(&parts) else {
                continue;
            };
            if m != method {
                if !allowed.contains(m) {
                    allowed.push(m.clone());
                }
                continue;
            }
            let specificity = t.specificity();
            if best.as_ref().is_none_or(|b| specificity > b.specificity) {
                best = Some(Candidate {
                    index: i,
                    captured,
                    specificity,
                });
            }
        }
        match best {
            Some(Candidate { index, captured, .. }) => {
                let mut params = Vec::with_capacity(captured.len());
                for (name, raw) in captured {
                    match percent_decode(raw) {
                        Some(v) => params.push((name.to_owned(), v)),
                        None => return Found::BadParam(name.to_owned()),
                    }
                }
                Found::Route(index, params)
            }
            None if !allowed.is_empty() => {
                allowed.sort();
                Found::MethodNotAllowed(allowed)
            }
            None => Found::NotFound,
        }
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    fn router(routes: &[(&str, &str)]) -> Router {
        Router::new(routes.iter().map(|(m, p)| ((*m).to_owned(), t(p))))
    }

    #[test]
    fn templates() {
        assert_eq!(t("/api/users/{id}").params().collect::<Vec<_>>(), vec!["id"]);
        assert_eq!(t("/").params().count(), 0);
        for (bad, want) in [
            ("api", TemplateError::NotAbsolute("api".into())),
            ("/a//b", TemplateError::EmptySegment),
            ("/a/", TemplateError::EmptySegment),
            ("/a/{Id}", TemplateError::BadParam("Id".into())),
            ("/a/{}", TemplateError::BadParam(String::new())),
            ("/a/{id}/{id}", TemplateError::DuplicateParam("id".into())),
            ("/a/b c", TemplateError::BadLiteral("b c".into())),
            ("/a/{id}x", TemplateError::BadLiteral("{id}x".into())),
        ] {
            assert_eq!(Template::parse(bad), Err(want), "{bad}");
        }
    }

    #[test]
    fn literals_win_and_methods_are_told() {
        let r = router(&[
            ("POST", "/api/users"),
            ("POST", "/api/users/login"),
            ("GET", "/api/users/{id}"),
            ("PUT", "/api/users/{id}"),
            ("GET", "/api/orders/user/{user_id}"),
            ("GET", "/api/orders/{id}"),
            ("PUT", "/api/orders/{id}/status"),
        ]);
        assert_eq!(r.find("POST", "/api/users/login"), Found::Route(1, vec![]));
        assert_eq!(
            r.find("GET", "/api/users/42"),
            Found::Route(2, vec![("id".into(), "42".into())])
        );
        assert_eq!(
            r.find("GET", "/api/users/42?x=1"),
            Found::Route(2, vec![("id".into(), "42".into())])
        );
        assert_eq!(
            r.find("GET", "/api/orders/user/7"),
            Found::Route(4, vec![("user_id".into(), "7".into())])
        );
        assert_eq!(
            r.find("GET", "/api/orders/user"),
            Found::Route(5, vec![("id".into(), "user".into())])
        );
        assert_eq!(
            r.find("DELETE", "/api/users/42"),
            Found::MethodNotAllowed(vec!["GET".into(), "PUT".into()])
        );
        assert_eq!(
            r.find("GET", "/api/users/login"),
            Found::Route(2, vec![("id".into(), "login".into())])
        );
        assert_eq!(r.find("GET", "/api/nothing"), Found::NotFound);
        assert_eq!(r.find("GET", "/api/users/"), Found::NotFound);
        assert_eq!(r.find("GET", "nope"), Found::NotFound);
        assert_eq!(
            r.find("GET", "/api/users/%E6%89%8B%E6%9C%BA"),
            Found::Route(2, vec![("id".into(), "手机".into())])
        );
        assert_eq!(r.find("GET", "/api/users/%zz"), Found::BadParam("id".into()));
        assert_eq!(r.find("GET", "/api/users/%ff"), Found::BadParam("id".into()));
    }

    #[test]
    fn collisions_and_ambiguities() {
        let names = |pairs: Vec<(String, String, &str)>| -> Vec<String> {
            pairs
                .into_iter()
                .map(|(a, b, why)| format!("{a} {why} {b}"))
                .collect()
        };
        let check = |routes: &[(&'static str, &'static str, &'static str)]| {
            let ts: Vec<(&str, &str, Template)> = routes.iter().map(|(n, m, p)| (*n, *m, t(p))).collect();
            names(conflicts(ts.iter().map(|(n, m, tt)| (*n, *m, tt))))
        };
        assert_eq!(
            check(&[("a", "GET", "/x/{id}"), ("b", "GET", "/x/{other}")]),
            vec!["a collides with b"]
        );
        assert_eq!(
            check(&[("a", "GET", "/x/{id}/c"), ("b", "GET", "/x/b/{y}")]),
            vec!["a is ambiguous with b"]
        );
        assert!(
            check(&[("a", "GET", "/x/{id}"), ("b", "GET", "/x/login")]).is_empty(),
            "literal wins"
        );
        assert!(
            check(&[("a", "GET", "/x/{id}"), ("b", "PUT", "/x/{id}")]).is_empty(),
            "other method"
        );
        assert!(
            check(&[("a", "GET", "/x/a/{id}"), ("b", "GET", "/x/b/{id}")]).is_empty(),
            "disjoint"
        );
    }
}
