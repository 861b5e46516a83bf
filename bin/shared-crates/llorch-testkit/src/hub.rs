//! A small Hugging Face hub stand-in on 127.0.0.1: a real HTTP/1.1 server (std threads) that
//! serves the hub's URL layout. `HEAD/GET /{repo}/resolve/{rev}/{file}` answers like the hub:
//! LFS files get a 302 to `/cdn/<sha256>` carrying `X-Linked-Etag`/`X-Linked-Size`/
//! `X-Repo-Commit`; regular files get a 200 with the git blob sha1 as `ETag`. `/cdn/...` honours
//! `Range`, can drop the connection mid-file once and can be throttled (slow downloads whose
//! progress a test observes). `/api/models/{repo}/revision/{rev}` lists
//! files. Every request is logged with its `Range` header and the body bytes sent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A file in a test repo.
#[derive(Clone)]
pub struct HubFile {
    pub content: Vec<u8>,
    /// Stored with git LFS (metadata carries its sha256) or as a regular git file.
    pub lfs: bool,
    /// When set, `/cdn` serves these bytes instead of `content` (corruption in transit).
    pub served: Option<Vec<u8>>,
}

impl HubFile {
    /// A file stored with git LFS.
    pub fn lfs(content: Vec<u8>) -> HubFile {
        HubFile {
            content,
            lfs: true,
            served: None,
        }
    }
    /// A regular git file.
    pub fn git(content: Vec<u8>) -> HubFile {
        HubFile {
            content,
            lfs: false,
            served: None,
        }
    }
    /// sha256 hex of the content.
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.content))
    }
    fn git_sha1(&self) -> String {
        let mut h = Sha1::new();
        h.update(format!("blob {}\0", self.content.len()).as_bytes());
        h.update(&self.content);
        hex(&h.finalize())
    }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    pub body_bytes: u64,
}

#[derive(Default)]
struct State {
    /// repo -> (commit, files)
    repos: BTreeMap<String, (String, BTreeMap<String, HubFile>)>,
    /// Drop the next `/cdn` body after this many bytes.
    drop_after: Option<u64>,
    /// Bytes per second of `/cdn` bodies (unlimited when unset).
    throttle: Option<u64>,
    seen: Vec<Seen>,
}

/// The running server; it stops accepting when dropped (the thread ends with the test).
pub struct HubServer {
    pub addr: String,
    state: Arc<Mutex<State>>,
}

/// The commit every repo is at.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

impl HubServer {
    /// Listen on 127.0.0.1 (a free port) and serve until the test ends.
    pub fn start() -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let a = addr.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let st = st.clone();
                let a = a.clone();
                std::thread::spawn(move || handle(stream, &st, &a));
            }
        });
        HubServer { addr, state }
    }

    /// `http://addr`, for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve `files` as `repo` at [`COMMIT`] (branch `main`).
    pub fn add_repo(&self, repo: &str, files: Vec<(&str, HubFile)>) {
        let files = files.into_iter().map(|(n, f)| (n.to_string(), f)).collect();
        self.state
            .lock()
            .unwrap()
            .repos
            .insert(repo.to_string(), (COMMIT.to_string(), files));
    }

    /// Drop the connection of the next `/cdn` GET after `bytes` body bytes.
    pub fn drop_next_body_after(&self, bytes: u64) {
        self.state.lock().unwrap().drop_after = Some(bytes);
    }

    /// Send `/cdn` bodies at about `bytes_per_sec` from now on.
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.state.lock().unwrap().throttle = Some(bytes_per_sec.max(1));
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Requests for file content (`GET /cdn/...`).
    pub fn content_gets(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.path.starts_with("/cdn/"))
            .collect()
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Body length announced in Content-Length (may exceed what is sent when dropping).
    announced: usize,
    drop_after: Option<u64>,
    throttle: Option<u64>,
}

impl Response {
    fn new(status: u16, body: Vec<u8>) -> Response {
        let announced = body.len();
        Response {
            status,
            headers: Vec::new(),
            body,
            announced,
            drop_after: None,
            throttle: None,
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Response {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

fn handle(stream: TcpStream, state: &Arc<Mutex<State>>, addr: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let (mut range, mut authorization) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let resp = route(&method, &path, range.as_deref(), state, addr);
    let sent = write_response(stream, &method, &resp);
    state.lock().unwrap().seen.push(Seen {
        method,
        path,
        range,
        authorization,
        status: resp.status,
        body_bytes: sent,
    });
}

fn not_found(code: &str) -> Response {
    Response::new(404, code.as_bytes().to_vec()).header("X-Error-Code", code)
}

fn route(
    method: &str,
    path: &str,
    range: Option<&str>,
    state: &Arc<Mutex<State>>,
    addr: &str,
) -> Response {
    let mut st = state.lock().unwrap();
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let file = st
            .repos
            .values()
            .flat_map(|(_, f)| f.values())
            .find(|f| f.sha256() == sha)
            .cloned();
        let Some(file) = file else {
            return not_found("EntryNotFound");
        };
        let bytes = file.served.clone().unwrap_or(file.content.clone());
        let start: usize = range
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut resp = if range.is_some() {
            let total = bytes.len();
            Response::new(206, bytes[start..].to_vec()).header(
                "Content-Range",
                format!("bytes {start}-{}/{total}", total - 1),
            )
        } else {
            Response::new(200, bytes)
        };
        if method == "GET" {
            resp.drop_after = st.drop_after.take();
            resp.throttle = st.throttle;
        }
        return resp;
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, _rev)) = rest.split_once("/revision/") else {
            return not_found("EntryNotFound");
        };
        let Some((commit, files)) = st.repos.get(repo) else {
            return not_found("RepoNotFound");
        };
        let siblings: Vec<_> = files
            .keys()
            .map(|k| serde_json::json!({ "rfilename": k }))
            .collect();
        let body =
            serde_json::json!({ "id": repo, "sha": commit, "siblings": siblings }).to_string();
        return Response::new(200, body.into_bytes()).header("Content-Type", "application/json");
    }
    let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return not_found("EntryNotFound");
    };
    let Some((rev, file)) = rest.split_once('/') else {
        return not_found("EntryNotFound");
    };
    let Some((commit, files)) = st.repos.get(repo) else {
        return not_found("RepoNotFound");
    };
    if rev != "main" && rev != commit {
        return not_found("RevisionNotFound");
    }
    let Some(f) = files.get(file) else {
        return not_found("EntryNotFound");
    };
    if f.lfs {
        let sha = f.sha256();
        Response::new(302, Vec::new())
            .header("Location", format!("http://{addr}/cdn/{sha}"))
            .header("X-Repo-Commit", commit.clone())
            .header("X-Linked-Etag", format!("\"{sha}\""))
            .header("X-Linked-Size", f.content.len().to_string())
            .header("ETag", format!("\"{}\"", f.git_sha1()))
    } else {
        Response::new(200, f.content.clone())
            .header("X-Repo-Commit", commit.clone())
            .header("ETag", format!("\"{}\"", f.git_sha1()))
    }
}

/// Write the answer; returns the body bytes actually sent.
fn write_response(mut stream: TcpStream, method: &str, r: &Response) -> u64 {
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status, r.announced
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || method == "HEAD" {
        return 0;
    }
    let n = r
        .drop_after
        .map(|d| (d as usize).min(r.body.len()))
        .unwrap_or(r.body.len());
    let mut sent = 0u64;
    let t0 = std::time::Instant::now();
    for chunk in r.body[..n].chunks(64 * 1024) {
        if stream.write_all(chunk).is_err() {
            break;
        }
        sent += chunk.len() as u64;
        if let Some(rate) = r.throttle {
            let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
    sent
}
