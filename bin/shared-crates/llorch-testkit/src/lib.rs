//! Test support shared by every crate's tests.
//!
//! Rule: under `CI=true` a test never skips for a missing model, binary or service; it fails.
//! Locally a test may skip, and then prints why. Use [`require_model`], [`require_bin`] or
//! [`skip_or_fail`] to apply that rule.

#![forbid(unsafe_code)]

pub mod hub;
pub mod routes;
pub mod sshd;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when running under CI (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// In CI: panic with `why`. Locally: print why the test is skipped, and append the line to the
/// file named by `LLORCH_SKIP_LOG` (scripts/test.sh sets it and prints every skip at the end, so
/// a skip cannot hide in the middle of the output). Returns `None` for `?`-style use.
pub fn skip_or_fail<T>(test: &str, why: &str) -> Option<T> {
    if in_ci() {
        panic!("{test}: {why} (CI=true: missing prerequisites fail instead of skipping)");
    }
    eprintln!("SKIPPED {test}: {why}");
    if let Some(log) = std::env::var_os("LLORCH_SKIP_LOG") {
        let line = format!("{test}: {why}\n");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log);
        if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
            eprintln!(
                "could not record the skip in {}: {e}",
                Path::new(&log).display()
            );
        }
    }
    None
}

/// Repository root (the directory holding the workspace `Cargo.lock`/`Cargo.toml`).
pub fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        if dir.join("Cargo.toml").is_file() && dir.join("fixtures").is_dir() {
            return dir;
        }
        if !dir.pop() {
            panic!(
                "repository root not found above {}",
                env!("CARGO_MANIFEST_DIR")
            );
        }
    }
}

/// Path of a file under `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures").join(name)
}

/// Parsed `fixtures/smollm2-greedy.json` (llama.cpp reference outputs).
pub fn smollm2_fixture() -> serde_json::Value {
    let path = fixture("smollm2-greedy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

/// Directory where `scripts/fetch-test-model.sh` caches models.
pub fn model_cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("LLORCH_MODEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    base.join("llorch").join("models")
}

/// Known test models and the file name the fetch script gives them.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3_FILE: &str = "gemma-3-270m-Q4_K_M.gguf";

/// Path of a cached test model (`LLORCH_TEST_MODEL` overrides SmolLM2's); skip-or-fail if absent.
pub fn require_model(test: &str, file: &str) -> Option<PathBuf> {
    if file == SMOLLM2_FILE {
        if let Ok(p) = std::env::var("LLORCH_TEST_MODEL") {
            return Some(PathBuf::from(p));
        }
    }
    let path = model_cache_dir().join(file);
    if path.is_file() {
        Some(path)
    } else {
        skip_or_fail(
            test,
            &format!(
                "{} not found; run scripts/fetch-test-model.sh",
                path.display()
            ),
        )
    }
}

/// The SmolLM2-135M Q4_1 GGUF, or skip-or-fail.
pub fn require_smollm2(test: &str) -> Option<PathBuf> {
    require_model(test, SMOLLM2_FILE)
}

/// Directory holding the workspace's built binaries (`target/<profile>`), derived from the
/// running test executable (`target/<profile>/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("exe dir");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("profile dir").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of a workspace binary built by `cargo build --bins`; skip-or-fail if it is not built.
pub fn require_bin(test: &str, name: &str) -> Option<PathBuf> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Some(path)
    } else {
        skip_or_fail(
            test,
            &format!(
                "{} not built; run `cargo build --workspace --bins` first",
                path.display()
            ),
        )
    }
}

/// A currently free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Minimal blocking HTTP GET on loopback: returns (status, body). For readiness polling in tests.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// How a CLI child ended after Ctrl-C: its exit status, its whole stderr, and the time from the
/// signal to its exit.
pub struct Interrupted {
    pub status: std::process::ExitStatus,
    pub stderr: String,
    pub exit_after: Duration,
}

/// Wait for the first byte `child` writes to its (piped) stdout, then send it SIGINT (as Ctrl-C
/// would) and wait for it to exit. The child's stderr must be piped too.
pub fn interrupt_after_first_output(child: &mut Child) -> Interrupted {
    let mut first = [0u8; 1];
    child
        .stdout
        .take()
        .expect("stdout piped")
        .read_exact(&mut first)
        .expect("a first byte of output");
    let sent = Instant::now();
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(st.success(), "kill -INT {} failed", child.id());
    let status = child.wait().expect("the child exits");
    let exit_after = sent.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    Interrupted {
        status,
        stderr,
        exit_after,
    }
}

/// A worker (`llorch-candled`) started for a test; killed on drop.
pub struct WorkerProcess {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Start `llorch-candled --model MODEL --port P` plus `extra` args and wait for `/health`.
    pub fn start(bin: &Path, model: &Path, extra: &[&str]) -> WorkerProcess {
        Self::start_with_env(bin, model, extra, &[])
    }

    /// [`WorkerProcess::start`] with extra environment variables (e.g. `LLORCH_WORKER_TOKEN`,
    /// or a `LLORCH_FAULT_*` fault injection).
    pub fn start_with_env(
        bin: &Path,
        model: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("llorch-test-worker-{port}.log"));
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("--model")
            .arg(model)
            .args(["--port", &port.to_string(), "--threads", "2"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut w = WorkerProcess {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        w.wait_ready(Duration::from_secs(60));
        w
    }

    /// Poll `/health` until it answers 200; panics with the log tail on exit or timeout.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "worker exited ({status}) before ready:\n{}",
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http_get(&self.addr, "/health") {
                return;
            }
            if start.elapsed() > timeout {
                panic!("worker not ready after {timeout:?}:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Last lines of the worker's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Base URL, e.g. `http://127.0.0.1:8123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `program ...` command line inside the fenced code blocks of a Markdown text, split
/// into arguments as a POSIX shell would for simple lines (single and double quotes,
/// backslash-newline continuations); `# comments` and anything after `|`, `&&`, `;` or `>`
/// are dropped. Used to check that documented commands parse.
pub fn doc_commands(markdown: &str, program: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            pending.clear();
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.trim();
        if pending.is_empty() && !line.starts_with(&format!("{program} ")) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        out.push(shell_words(&std::mem::take(&mut pending)));
    }
    out
}

/// Every `--flag` of the `program [--flag VALUE] …` synopses in the fenced code blocks of a
/// Markdown text (a synopsis continues on the indented lines below it). Used to check that a
/// spec names only flags the program accepts.
pub fn doc_flags(markdown: &str, program: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut in_block, mut in_synopsis) = (false, false);
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            in_synopsis = false;
            continue;
        }
        if !in_block {
            continue;
        }
        let continued = in_synopsis && line.starts_with(char::is_whitespace);
        in_synopsis = continued || line.starts_with(&format!("{program} "));
        if !in_synopsis {
            continue;
        }
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if word.len() > 2 && word.starts_with("--") {
                out.push(word.to_string());
            }
        }
    }
    out
}

/// Split one simple shell line into words (see [`doc_commands`]).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.get_or_insert_with(String::new);
            }
            (None, '#' | '|' | ';' | '>' | '&') if cur.is_none() => break,
            (None, c) if c.is_whitespace() => words.extend(cur.take()),
            (None, c) => cur.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(cur);
    words
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    #[test]
    fn synopsis_flags_are_found() {
        let md = "```\nprog [--a X] [--b-c N]\n     [--d true|false]\nother --e\n```\n--f\n";
        assert_eq!(doc_flags(md, "prog"), ["--a", "--b-c", "--d"]);
    }

    #[test]
    fn commands_are_found_and_split() {
        let md = "text\n```sh\nllorch a 'b c' \"d\" # note\nother x\nllorch e \\\n  --f g | jq\n```\nllorch outside\n";
        assert_eq!(
            doc_commands(md, "llorch"),
            vec![
                vec!["llorch", "a", "b c", "d"],
                vec!["llorch", "e", "--f", "g"]
            ]
        );
    }
}

/// A small deterministic random generator (xorshift64*) for bounded fuzz-style tests: the same
/// seed gives the same cases, so a failure names a reproducible case.
#[derive(Debug, Clone)]
pub struct FuzzRng(u64);

impl FuzzRng {
    /// A generator from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `text` with 1..=4 random edits, as a damaged or hand-edited file would have them: a
    /// range deleted, a line doubled or dropped, a character replaced by a syntax character, a
    /// huge or negative number or a non-ASCII one, or the end cut off.
    pub fn mutate_text(&mut self, text: &str) -> String {
        let inserts = [
            "\"",
            "'",
            "[",
            "]",
            "{",
            "}",
            "=",
            ",",
            ":",
            "\n",
            "#",
            "0",
            "-1",
            "1e999",
            "99999999999999999999",
            "true",
            "null",
            "é",
            "\u{0}",
            "[[x]]",
            "\\",
        ];
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..1 + self.below(4) {
            let n = chars.len();
            if n == 0 {
                break;
            }
            let at = self.below(n);
            match self.below(5) {
                0 => {
                    let end = (at + 1 + self.below(16)).min(n);
                    chars.drain(at..end);
                }
                1 => {
                    let ins: Vec<char> = self.pick(&inserts).chars().collect();
                    chars.splice(at..(at + 1).min(n), ins);
                }
                2 => chars.truncate(at),
                _ => {
                    let lines: Vec<String> = chars
                        .iter()
                        .collect::<String>()
                        .lines()
                        .map(str::to_string)
                        .collect();
                    let i = self.below(lines.len().max(1));
                    let mut out: Vec<String> = lines.clone();
                    if self.below(2) == 0 && i < out.len() {
                        out.insert(i, lines[i].clone());
                    } else if i < out.len() {
                        out.remove(i);
                    }
                    chars = out.join("\n").chars().collect();
                }
            }
        }
        chars.into_iter().collect()
    }

    /// A random JSON value at most `depth` levels deep: every JSON type, with edge cases
    /// (huge and negative numbers, long and non-ASCII strings, empty containers).
    pub fn json(&mut self, depth: u32) -> serde_json::Value {
        use serde_json::{json, Value};
        let kinds = if depth == 0 { 6 } else { 8 };
        match self.below(kinds) {
            0 => Value::Null,
            1 => Value::Bool(self.below(2) == 1),
            2 => json!(*self.pick(&[
                0i64,
                1,
                -1,
                2,
                255,
                256,
                65_536,
                i64::MAX,
                i64::MIN,
                4_294_967_296
            ])),
            3 => json!(*self.pick(&[
                0.0f64,
                0.5,
                -0.5,
                1.0,
                2.0,
                2.0001,
                1e300,
                -1e-300,
                f64::MAX
            ])),
            4 => json!(*self.pick(&["", "a", "user", "🙂", "<|im_end|>", "\u{0}", "x:y", "  "])),
            5 => Value::String("é".repeat(self.below(3000))),
            6 => Value::Array((0..self.below(4)).map(|_| self.json(depth - 1)).collect()),
            _ => Value::Object(
                (0..self.below(4))
                    .map(|_| {
                        let k = *self.pick(&["role", "content", "text", "x", "type", ""]);
                        (k.to_string(), self.json(depth - 1))
                    })
                    .collect(),
            ),
        }
    }
}
