//! Route contract checks shared by the daemons' tests: a router serves exactly the routes of
//! `llorch_wire::routes` (each with its methods; other methods get 405), and its source names
//! routes only through those constants.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// Methods probed on every route.
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];

/// `template` with every `{param}` / `{*param}` replaced by `x`.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        out.push('x');
        rest = rest[open..].split_once('}').map_or("", |(_, r)| r);
    }
    out.push_str(rest);
    out
}

/// One request on a fresh connection: (status, body), the body read only when the answer is
/// a 404 or 405 (an event stream's body never ends).
fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = if method == "GET" || method == "DELETE" {
        ""
    } else {
        "{}"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status == 404 || status == 405 {
        let _ = s.read_to_end(&mut buf);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    Ok((
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

/// Probe `addr` (host:port) with every method on every route of `routes` (path template,
/// methods); returns what does not match: a listed method answered by the router's fallback
/// (`no route` 404, or 405), or an unlisted method not answered 405 `METHOD_NOT_ALLOWED`.
pub fn check_served(addr: &str, routes: &[(&str, &[&str])], token: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    for (template, methods) in routes {
        let path = concrete(template);
        for m in METHODS {
            let (status, body) = match request(addr, m, &path, token) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("{m} {path}: {e}"));
                    continue;
                }
            };
            let fallback = status == 405 || (status == 404 && body.contains("no route "));
            if methods.contains(m) && fallback {
                problems.push(format!(
                    "{m} {template} is in the wire crate but not served ({status}: {body})"
                ));
            }
            if !methods.contains(m)
                && (status != 405
                    || !body.contains("METHOD_NOT_ALLOWED") && !body.contains("method_not_allowed"))
            {
                problems.push(format!(
                    "{m} {template} is served ({status}) but not listed in the wire crate"
                ));
            }
        }
    }
    problems
}

/// Every `.route(` call under `src` whose path is a string literal instead of a
/// `llorch_wire::routes` constant (`file:line: text`), except paths in `allowed`.
pub fn literal_routes(src: &Path, allowed: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (at, _) in text.match_indices(".route(") {
                    let arg = text[at + 7..].trim_start();
                    let Some(lit) = arg.strip_prefix('"') else {
                        continue;
                    };
                    let lit = lit.split('"').next().unwrap_or("");
                    if !allowed.contains(&lit) {
                        let line = text[..at].lines().count();
                        found.push(format!("{}:{line}: .route(\"{lit}\"", p.display()));
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn concrete_paths() {
        assert_eq!(
            super::concrete("/v2/tasks/{id}/cancel"),
            "/v2/tasks/x/cancel"
        );
        assert_eq!(super::concrete("/v1/models/{*id}"), "/v1/models/x");
        assert_eq!(super::concrete("/health"), "/health");
    }
}
