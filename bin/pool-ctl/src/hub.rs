//! Hugging Face hub access: endpoint/token/cache configuration as the Python `huggingface_hub`
//! reads it, the cache layout (`models--org--name/{blobs,snapshots,refs}`), file metadata from
//! `HEAD {endpoint}/{repo}/resolve/{revision}/{file}` and repo listings from the models API.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_LENGTH, ETAG, LOCATION};
use serde::Deserialize;

use crate::error::{PoolError, Result};

/// Default hub endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Limit of one blocking read or write on a download connection.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the hub is, how to authenticate, and where files are cached.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `HF_ENDPOINT` or [`DEFAULT_ENDPOINT`], without a trailing slash.
    pub endpoint: String,
    /// `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, or the token file (`HF_TOKEN_PATH`, `$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE` or `$HF_HOME/hub` (`~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl HubConfig {
    /// Read the configuration from the environment, like `huggingface_hub` does.
    pub fn from_env() -> HubConfig {
        let hf_home = env_nonempty("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let cache = env_nonempty("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                    });
                cache.join("huggingface")
            });
        let cache_dir = env_nonempty("HF_HUB_CACHE")
            .or_else(|| env_nonempty("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = env_nonempty("HF_TOKEN")
            .or_else(|| env_nonempty("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = env_nonempty("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let endpoint = env_nonempty("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        HubConfig {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            cache_dir,
        }
    }

    /// `<cache>/models--org--name`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cache_dir
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// `<cache>/.locks/models--org--name/<etag>.lock` (the lock path `huggingface_hub` uses).
    pub fn lock_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.cache_dir
            .join(".locks")
            .join(format!("models--{}", repo.replace('/', "--")))
            .join(format!("{etag}.lock"))
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`.
    pub fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            repo,
            encode(revision, false),
            encode(file, true)
        )
    }
}

/// Percent-encode everything but unreserved characters (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the hub says about one file before it is fetched.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// The resolve URL (GETs follow its redirect to the CDN).
    pub url: String,
    /// Commit the revision resolves to (`X-Repo-Commit`).
    pub commit: String,
    /// `X-Linked-Etag` (the sha256 of an LFS file) or `ETag` (git blob sha1), unquoted.
    pub etag: String,
    /// `X-Linked-Size` or `Content-Length`.
    pub size: u64,
}

impl FileMeta {
    /// Checksum the etag stands for: sha256 (64 hex digits, LFS) or git-sha1 (40, regular files).
    pub fn checksum_kind(&self) -> Option<&'static str> {
        let hex = self.etag.bytes().all(|b| b.is_ascii_hexdigit());
        match (hex, self.etag.len()) {
            (true, 64) => Some("sha256"),
            (true, 40) => Some("git-sha1"),
            _ => None,
        }
    }
}

/// HTTP access to one hub endpoint.
pub struct Hub {
    pub config: HubConfig,
    /// Does not follow redirects: metadata lives on the hub's own (redirect) response.
    head_client: Client,
    /// Follows redirects to the CDN; reqwest drops `Authorization` when the host changes.
    get_client: Client,
}

impl Hub {
    /// Clients for `config`.
    pub fn new(config: HubConfig) -> Result<Hub> {
        let build = |redirects: bool| {
            let policy = if redirects {
                reqwest::redirect::Policy::limited(10)
            } else {
                reqwest::redirect::Policy::none()
            };
            Client::builder()
                .user_agent(concat!("llorch-pool/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(IO_TIMEOUT)
                .redirect(policy)
                .build()
                .map_err(|e| PoolError::Unreachable {
                    url: config.endpoint.clone(),
                    reason: e.to_string(),
                })
        };
        Ok(Hub {
            head_client: build(false)?,
            get_client: build(true)?,
            config,
        })
    }

    /// Add the token and disable compression (sizes and hashes refer to the raw bytes).
    pub fn authed(&self, req: RequestBuilder) -> RequestBuilder {
        let req = req.header(ACCEPT_ENCODING, "identity");
        match &self.config.token {
            Some(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        }
    }

    /// A GET that follows redirects (for file content).
    pub fn get(&self, url: &str) -> RequestBuilder {
        self.authed(self.get_client.get(url))
    }

    /// Metadata of `file` at `revision`, from a HEAD on its resolve URL.
    pub fn file_meta(&self, repo: &str, revision: &str, file: &str) -> Result<FileMeta> {
        let url = self.config.resolve_url(repo, revision, file);
        let mut target = url.clone();
        // Follow relative redirects only (renamed repos); absolute ones point at the CDN and the
        // metadata is already on this response.
        for _ in 0..5 {
            let resp = self
                .authed(self.head_client.head(&target))
                .send()
                .map_err(|e| unreachable(&target, e))?;
            let status = resp.status();
            if status.is_redirection() {
                let loc = header(resp.headers(), LOCATION.as_str()).unwrap_or_default();
                if loc.starts_with('/') && header(resp.headers(), "x-linked-etag").is_none() {
                    target = format!("{}{}", self.config.endpoint, loc);
                    continue;
                }
            } else if !status.is_success() {
                return Err(status_error(&resp, &target, repo, revision, Some(file)));
            }
            return parse_meta(resp.headers(), url, revision);
        }
        Err(PoolError::BadHubResponse {
            url,
            reason: "too many redirects".into(),
        })
    }

    /// Commit and file names of `repo` at `revision` (`GET {endpoint}/api/models/{repo}/revision/{rev}`).
    pub fn list_files(&self, repo: &str, revision: &str) -> Result<(String, Vec<String>)> {
        #[derive(Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(Deserialize)]
        struct Info {
            sha: Option<String>,
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.config.endpoint,
            repo,
            encode(revision, false)
        );
        let resp = self.get(&url).send().map_err(|e| unreachable(&url, e))?;
        if !resp.status().is_success() {
            return Err(status_error(&resp, &url, repo, revision, None));
        }
        let info: Info = resp.json().map_err(|e| PoolError::BadHubResponse {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let sha = info.sha.ok_or_else(|| PoolError::BadHubResponse {
            url,
            reason: "no `sha` in repo info".into(),
        })?;
        Ok((
            sha,
            info.siblings.into_iter().map(|s| s.rfilename).collect(),
        ))
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Strip a weak-validator prefix and quotes from an ETag.
fn normalize_etag(e: &str) -> String {
    e.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

fn parse_meta(h: &HeaderMap, url: String, revision: &str) -> Result<FileMeta> {
    let bad = |reason: &str| PoolError::BadHubResponse {
        url: url.clone(),
        reason: reason.to_string(),
    };
    let commit = header(h, "x-repo-commit")
        .or_else(|| is_commit(revision).then(|| revision.to_string()))
        .ok_or_else(|| bad("no X-Repo-Commit header"))?;
    let etag = header(h, "x-linked-etag")
        .or_else(|| header(h, ETAG.as_str()))
        .map(|e| normalize_etag(&e))
        .filter(|e| !e.is_empty())
        .ok_or_else(|| bad("no ETag / X-Linked-Etag header"))?;
    if etag.contains('/') || etag.contains("..") {
        return Err(bad("ETag is not a valid blob name"));
    }
    let size = header(h, "x-linked-size")
        .or_else(|| header(h, CONTENT_LENGTH.as_str()))
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| bad("no X-Linked-Size / Content-Length header"))?;
    Ok(FileMeta {
        url,
        commit,
        etag,
        size,
    })
}

/// Whether `s` looks like a full git commit hash.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn unreachable(url: &str, e: reqwest::Error) -> PoolError {
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        reason = format!("{reason}: {s}");
        src = s.source();
    }
    PoolError::Unreachable {
        url: url.to_string(),
        reason,
    }
}

/// Map a non-2xx hub answer to a typed error using `X-Error-Code` (as the hub sends it).
pub fn status_error(
    resp: &Response,
    url: &str,
    repo: &str,
    revision: &str,
    file: Option<&str>,
) -> PoolError {
    let status = resp.status().as_u16();
    let code = header(resp.headers(), "x-error-code").unwrap_or_default();
    let endpoint = url.split('/').take(3).collect::<Vec<_>>().join("/");
    match code.as_str() {
        "RepoNotFound" => PoolError::RepoNotFound {
            repo: repo.into(),
            endpoint,
        },
        "RevisionNotFound" => PoolError::RevisionNotFound {
            repo: repo.into(),
            revision: revision.into(),
        },
        "EntryNotFound" => PoolError::EntryNotFound {
            repo: repo.into(),
            revision: revision.into(),
            file: file.unwrap_or_default().into(),
        },
        "GatedRepo" => PoolError::AccessDenied {
            repo: repo.into(),
            status,
            hint: "the repo is gated: accept its licence on the hub and set HF_TOKEN".into(),
        },
        _ if status == 401 || status == 403 => PoolError::AccessDenied {
            repo: repo.into(),
            status,
            hint: "set HF_TOKEN to a token with read access".into(),
        },
        _ => PoolError::HttpStatus {
            url: url.to_string(),
            status,
        },
    }
}

/// Match a repo path against a glob with `*` (any run of characters except `/`) and `?`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                go(&p[1..], n) || (n.first().is_some_and(|&c| c != b'/') && go(p, &n[1..]))
            }
            (Some(b'?'), Some(&c)) => c != b'/' && go(&p[1..], &n[1..]),
            (Some(a), Some(b)) => a == b && go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Whether a `files` entry is a glob pattern rather than an exact path.
pub fn is_pattern(s: &str) -> bool {
    s.contains('*') || s.contains('?')
}

/// Path of the snapshot link for `file` relative to its own directory, pointing at `blobs/<etag>`.
pub fn blob_link_target(file: &str, etag: &str) -> PathBuf {
    let depth = file.matches('/').count() + 2;
    let mut p = PathBuf::new();
    for _ in 0..depth {
        p.push("..");
    }
    p.join("blobs").join(etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_the_catalog_needs() {
        assert!(glob_match(
            "*.safetensors",
            "model-00001-of-00002.safetensors"
        ));
        assert!(glob_match("*.json", "config.json"));
        assert!(!glob_match("*.json", "onnx/config.json"));
        assert!(glob_match("tokenizer.model", "tokenizer.model"));
        assert!(glob_match("model-?.bin", "model-1.bin"));
        assert!(!glob_match("*.gguf", "model.gguf.part"));
    }

    #[test]
    fn urls_and_cache_paths() {
        let c = HubConfig {
            endpoint: "http://h".into(),
            token: None,
            cache_dir: "/c".into(),
        };
        assert_eq!(
            c.resolve_url("a/b", "refs/pr/1", "x y/m.gguf"),
            "http://h/a/b/resolve/refs%2Fpr%2F1/x%20y/m.gguf"
        );
        assert_eq!(c.repo_dir("a/b"), PathBuf::from("/c/models--a--b"));
        assert_eq!(
            blob_link_target("m.gguf", "e"),
            PathBuf::from("../../blobs/e")
        );
        assert_eq!(
            blob_link_target("d/m.gguf", "e"),
            PathBuf::from("../../../blobs/e")
        );
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
    }
}
