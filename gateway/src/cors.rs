//! CORS for a listener (`[listener.cors]`): which origins' pages may call the API from a browser,
//! answering preflights (`OPTIONS` with `Access-Control-Request-Method`) without touching a
//! route's auth or limits, and the `Access-Control-*` headers on every answer to an allowed
//! origin. A request from an origin that is not allowed is served as usual but without them,
//! so the browser keeps its answer from the page; a preflight from one is refused with 403.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};

use crate::config::Cors;
use crate::reply::{self, Refusal, Reply};

/// The request's `Origin` when `cors` allows it.
pub fn allowed_origin(cors: &Cors, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    let allowed = cors.any_origin || cors.origins.iter().any(|o| o.eq_ignore_ascii_case(text));
    allowed.then(|| origin.clone())
}

/// The answer to a preflight, or `None` when `req` is not one (it then goes to its route).
pub fn preflight<B>(
    cors: &Cors,
    origin: Option<&HeaderValue>,
    req: &Request<B>,
) -> Option<Result<Reply, Refusal>> {
    let headers = req.headers();
    if req.method() != Method::OPTIONS
        || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        || !headers.contains_key(header::ORIGIN)
    {
        return None;
    }
    if origin.is_none() {
        let named = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        return Some(Err(Refusal::Forbidden(format!(
            "origin {named:?} is not allowed to call this API from a browser"
        ))));
    }
    let mut r = reply::empty(StatusCode::NO_CONTENT);
    let h = r.headers_mut();
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_METHODS, &cors.allow_methods),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, &cors.allow_headers),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age_secs),
    );
    Some(Ok(r))
}

/// Adds the headers that let the page at `origin` read the answer.
pub fn allow(cors: &Cors, origin: HeaderValue, headers: &mut HeaderMap) {
    let wildcard = cors.any_origin && !cors.allow_credentials;
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        if wildcard {
            HeaderValue::from_static("*")
        } else {
            origin
        },
    );
    if !wildcard {
        // The answer depends on who asked: caches must keep one per origin.
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    if cors.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !cors.expose_headers.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cors.expose_headers)
    {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors {
            any_origin: origins.contains(&"*"),
            origins: origins
                .iter()
                .filter(|o| **o != "*")
                .map(|o| o.to_string())
                .collect(),
            allow_methods: "GET, POST".into(),
            allow_headers: "authorization, content-type".into(),
            expose_headers: "x-request-id".into(),
            max_age_secs: 600,
            allow_credentials: false,
        }
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/api/products");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_listed_origins_are_allowed_whatever_their_case() {
        let c = cors(&["https://shop.example"]);
        let r = request(Method::GET, &[("origin", "HTTPS://Shop.Example")]);
        assert!(allowed_origin(&c, r.headers()).is_some());
        let r = request(Method::GET, &[("origin", "https://evil.example")]);
        assert!(allowed_origin(&c, r.headers()).is_none());
        let r = request(Method::GET, &[]);
        assert!(allowed_origin(&c, r.headers()).is_none());
        assert!(
            allowed_origin(
                &cors(&["*"]),
                request(Method::GET, &[("origin", "null")]).headers()
            )
            .is_some()
        );
    }

    #[test]
    fn a_preflight_is_answered_here_and_anything_else_is_not() {
        let c = cors(&["https://shop.example"]);
        let pre = [
            ("origin", "https://shop.example"),
            ("access-control-request-method", "POST"),
        ];
        let r = request(Method::OPTIONS, &pre);
        let o = allowed_origin(&c, r.headers());
        let answer = preflight(&c, o.as_ref(), &r).unwrap().unwrap();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        assert_eq!(answer.headers()["access-control-allow-methods"], "GET, POST");
        assert_eq!(answer.headers()["access-control-max-age"], "600");

        let r = request(
            Method::OPTIONS,
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
        );
        let o = allowed_origin(&c, r.headers());
        assert!(matches!(
            preflight(&c, o.as_ref(), &r),
            Some(Err(Refusal::Forbidden(_)))
        ));

        let r = request(Method::OPTIONS, &[("origin", "https://shop.example")]);
        assert!(
            preflight(&c, None, &r).is_none(),
            "no Access-Control-Request-Method: not a preflight"
        );
        let r = request(Method::GET, &pre);
        assert!(preflight(&c, None, &r).is_none());
    }

    #[test]
    fn the_wildcard_is_used_only_without_credentials() {
        let mut h = HeaderMap::new();
        allow(
            &cors(&["*"]),
            HeaderValue::from_static("https://a.example"),
            &mut h,
        );
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(h.get("vary").is_none());

        let mut c = cors(&["https://a.example"]);
        c.allow_credentials = true;
        let mut h = HeaderMap::new();
        allow(&c, HeaderValue::from_static("https://a.example"), &mut h);
        assert_eq!(h["access-control-allow-origin"], "https://a.example");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["vary"], "origin");
        assert_eq!(h["access-control-expose-headers"], "x-request-id");
    }
}
