//! The page's files, embedded in the binary (`bin/orchestratord/ui/`, plain HTML/CSS/JS, no
//! build step), served with their content type, an ETag (`If-None-Match` → 304), `no-cache`
//! (revalidate every load, so an upgraded binary serves its own page at once) and a strict
//! Content-Security-Policy: everything comes from this origin, nothing inline.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Content-Security-Policy of every page response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    /// The route that serves it.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! ui {
    ($path:literal, $file:literal, $ty:literal) => {
        Asset {
            path: $path,
            content_type: $ty,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $file)),
        }
    };
}

/// Every file of the page.
pub const ASSETS: &[Asset] = &[
    ui!("/ui", "index.html", "text/html; charset=utf-8"),
    ui!("/ui/app.css", "app.css", "text/css; charset=utf-8"),
    ui!("/ui/app.js", "app.js", "text/javascript; charset=utf-8"),
    ui!("/ui/api.js", "api.js", "text/javascript; charset=utf-8"),
    ui!("/ui/util.js", "util.js", "text/javascript; charset=utf-8"),
    ui!(
        "/ui/charts.js",
        "charts.js",
        "text/javascript; charset=utf-8"
    ),
    ui!(
        "/ui/overview.js",
        "overview.js",
        "text/javascript; charset=utf-8"
    ),
    ui!("/ui/tasks.js", "tasks.js", "text/javascript; charset=utf-8"),
    ui!(
        "/ui/models.js",
        "models.js",
        "text/javascript; charset=utf-8"
    ),
    ui!(
        "/ui/playground.js",
        "playground.js",
        "text/javascript; charset=utf-8"
    ),
    ui!("/ui/icon.svg", "icon.svg", "image/svg+xml"),
];

/// The embedded file served at `path`.
pub fn find(path: &str) -> Option<(usize, &'static Asset)> {
    ASSETS.iter().enumerate().find(|(_, a)| a.path == path)
}

fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let d = Sha256::digest(a.body);
                let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// Headers every page response carries.
pub fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Serve asset `index` (200, or 304 when the client's copy is current).
pub fn serve(index: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let tag = &etags()[index];
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut resp = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_found_and_the_page_loads_only_its_own_files() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert_eq!(find(a.path).map(|(j, _)| j), Some(i));
            assert!(!a.body.is_empty(), "{} is empty", a.path);
        }
        let html = std::str::from_utf8(find("/ui").unwrap().1.body).unwrap();
        // Nothing inline (the CSP forbids it) and nothing from another origin.
        assert!(!html.contains("style="), "inline style in index.html");
        assert!(!html.contains("<script>"), "inline script in index.html");
        assert!(!html.contains("http://") && !html.contains("https://"));
        for a in ASSETS {
            if a.content_type.starts_with("text/javascript") {
                let js = std::str::from_utf8(a.body).unwrap();
                for line in js.lines() {
                    let l = line.trim_start();
                    if let Some(rest) = l.strip_prefix("import ") {
                        let from = rest.split("from").nth(1).unwrap_or(rest);
                        let module = from
                            .trim()
                            .trim_matches(|c| c == '\'' || c == '"' || c == ';');
                        let route = format!("/ui/{}", module.trim_start_matches("./"));
                        assert!(
                            find(&route).is_some(),
                            "{}: imports {module}, not served",
                            a.path
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn etag_revalidation_answers_304() {
        let (i, _) = find("/ui/app.js").unwrap();
        let first = serve(i, &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        let again = serve(i, &h);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::CONTENT_SECURITY_POLICY], CSP);
    }
}
