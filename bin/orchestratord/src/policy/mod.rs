//! The policy hook: an optional Rhai script consulted at admission (`fn admit(task, tenant)`:
//! reject, change the priority, restrict the workers or pools) and at placement
//! (`fn place(task, workers)`: one score per candidate). Sandboxed: operation, wall-time, size
//! and depth limits, no modules, no `eval`, no file or network access. Reloaded when the file
//! changes (a script that does not compile keeps the old one). Any failure of a call falls back
//! to the built-in policy for that call and is counted in `orchd_policy_errors_total{hook,kind}`.
//! Contract: `.specs/tenancy.md`, "Policy hook".

mod convert;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, FuncArgs, Scope, AST};

pub use convert::{AdmitInput, Decision, PlaceInput, Pools, Route};

use crate::config::PolicyConfig;
use crate::metrics::Metrics;
use crate::registry::WorkerEntry;

/// Environment variable fixing the time scripts see (unix ms), for tests of time-based policies.
pub const NOW_ENV: &str = "LLORCH_ORCH_POLICY_NOW_MS";
/// Operations between two looks at the clock.
const CLOCK_EVERY: u64 = 128;

thread_local! {
    /// When the script call running on this thread must stop.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// A script that cannot be used; names the file (and line and column for a syntax error).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("policy script {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy script {0}")]
    Compile(String),
}

/// The two hooks (the `hook` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Admit,
    Place,
}

impl Hook {
    /// The script function's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Admit => "admit",
            Hook::Place => "place",
        }
    }
}

/// A call that fell back: `kind` is `operations`, `timeout`, `limit`, `runtime` or `return`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub kind: &'static str,
    pub message: String,
}

/// One compiled version of the script.
struct Script {
    ast: AST,
    text: String,
    admit: bool,
    place: bool,
}

/// The loaded policy.
pub struct Policy {
    path: PathBuf,
    engine: Engine,
    script: RwLock<Arc<Script>>,
    /// The text of the last version that did not compile (logged once).
    rejected: Mutex<Option<String>>,
    timeout: Duration,
    fixed_now_ms: Option<u64>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("path", &self.path).finish()
    }
}

/// The sandboxed engine: no modules, no `eval`, bounded operations, depth and sizes, and a wall
/// clock checked every [`CLOCK_EVERY`] operations. Rhai itself has no file or network access.
fn engine(max_operations: u64) -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(max_operations);
    e.set_max_call_levels(16);
    e.set_max_expr_depths(64, 32);
    e.set_max_string_size(16 * 1024);
    e.set_max_array_size(10_000);
    e.set_max_map_size(10_000);
    e.set_max_modules(0);
    e.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    e.disable_symbol("eval");
    e.disable_symbol("import");
    e.on_print(|text| tracing::info!(script_print = %text, "policy script"));
    e.on_debug(|text, _, pos| tracing::debug!(script_debug = %text, %pos, "policy script"));
    e.on_progress(|ops| {
        let late = ops % CLOCK_EVERY == 0
            && DEADLINE
                .with(Cell::get)
                .is_some_and(|d| Instant::now() >= d);
        late.then_some(Dynamic::UNIT)
    });
    e
}

impl Policy {
    /// Read and compile the script named by `cfg` (which must name one).
    pub fn load(cfg: &PolicyConfig) -> Result<Policy, LoadError> {
        let path = cfg.script.clone().unwrap_or_default();
        let engine = engine(cfg.max_operations);
        let text = read(&path)?;
        let script = compile(&engine, &path, text).map_err(LoadError::Compile)?;
        if !script.admit && !script.place {
            tracing::warn!(path = %path.display(), "the policy script defines neither admit(task, tenant) nor place(task, workers)");
        }
        Ok(Policy {
            path,
            engine,
            script: RwLock::new(Arc::new(script)),
            rejected: Mutex::new(None),
            timeout: Duration::from_millis(cfg.timeout_ms),
            fixed_now_ms: std::env::var(NOW_ENV).ok().and_then(|v| v.parse().ok()),
        })
    }

    /// The script file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scripts see this time instead of the clock's (tests).
    pub fn with_now_ms(mut self, now_ms: u64) -> Self {
        self.fixed_now_ms = Some(now_ms);
        self
    }

    fn now_ms(&self) -> u64 {
        self.fixed_now_ms.unwrap_or_else(crate::task::unix_ms)
    }

    fn current(&self) -> Arc<Script> {
        self.script
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the current script has an admission hook.
    pub fn admits(&self) -> bool {
        self.current().admit
    }

    /// Whether the current script has a placement hook.
    pub fn places(&self) -> bool {
        self.current().place
    }

    /// Compile the file again if its text changed. `Some(true)`: the new version is in use;
    /// `Some(false)`: it did not compile (or cannot be read), the old one stays (logged and
    /// counted once per version); `None`: unchanged.
    pub fn reload_if_changed(&self, metrics: &Metrics) -> Option<bool> {
        let text = match read(&self.path) {
            Ok(t) => t,
            Err(e) => return self.refuse(metrics, String::new(), &e.to_string()),
        };
        if text == self.current().text {
            *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return None;
        }
        match compile(&self.engine, &self.path, text.clone()) {
            Ok(script) => {
                *self.script.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(script);
                *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) = None;
                metrics.policy_reloads_total.inc(&[]);
                tracing::info!(path = %self.path.display(), "policy script reloaded");
                Some(true)
            }
            Err(message) => self.refuse(metrics, text, &message),
        }
    }

    fn refuse(&self, metrics: &Metrics, text: String, message: &str) -> Option<bool> {
        let mut last = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() != Some(&text) {
            metrics
                .policy_errors_total
                .inc(&[("hook", "reload"), ("kind", "compile")]);
            tracing::error!(error = %message, "policy script not reloaded; the previous version stays in use");
            *last = Some(text);
        }
        Some(false)
    }

    /// The admission hook; any failure (counted, logged) decides nothing.
    pub fn admit(&self, metrics: &Metrics, input: &AdmitInput) -> Decision {
        let script = self.current();
        if !script.admit {
            return Decision::default();
        }
        let args = convert::admit_args(input, self.now_ms());
        let out = self.call(metrics, &script, Hook::Admit, args);
        match out.and_then(|d| convert::decision(d).map_err(bad_return)) {
            Ok(d) => d,
            Err(e) => {
                self.failed(metrics, Hook::Admit, &e);
                Decision::default()
            }
        }
    }

    /// The placement hook: one score per candidate (highest wins), or `None` for the built-in
    /// order (no hook, one candidate, or a failure, which is counted and logged).
    pub fn place(
        &self,
        metrics: &Metrics,
        input: &PlaceInput,
        candidates: &[&WorkerEntry],
        pools: &Pools,
    ) -> Option<Vec<f64>> {
        let script = self.current();
        if !script.place || candidates.len() < 2 {
            return None;
        }
        let args = convert::place_args(input, candidates, pools, self.now_ms());
        let out = self.call(metrics, &script, Hook::Place, args);
        match out.and_then(|d| convert::scores(d, candidates.len()).map_err(bad_return)) {
            Ok(s) => s,
            Err(e) => {
                self.failed(metrics, Hook::Place, &e);
                None
            }
        }
    }

    fn call(
        &self,
        metrics: &Metrics,
        script: &Script,
        hook: Hook,
        args: impl FuncArgs,
    ) -> Result<Dynamic, CallError> {
        let t0 = Instant::now();
        DEADLINE.with(|d| d.set(Some(t0 + self.timeout)));
        let mut scope = Scope::new();
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(false);
        let out = self.engine.call_fn_with_options::<Dynamic>(
            options,
            &mut scope,
            &script.ast,
            hook.as_str(),
            args,
        );
        DEADLINE.with(|d| d.set(None));
        let labels = [("hook", hook.as_str())];
        metrics.policy_calls_total.inc(&labels);
        metrics
            .policy_call_ms
            .observe(&labels, t0.elapsed().as_secs_f64() * 1000.0);
        out.map_err(|e| classify(&e))
    }

    fn failed(&self, metrics: &Metrics, hook: Hook, e: &CallError) {
        metrics
            .policy_errors_total
            .inc(&[("hook", hook.as_str()), ("kind", e.kind)]);
        tracing::warn!(hook = hook.as_str(), kind = e.kind, error = %e.message,
            "policy script failed; the built-in policy decides this call");
    }
}

fn bad_return(message: String) -> CallError {
    CallError {
        kind: "return",
        message,
    }
}

/// The `kind` of a failed call (errors inside nested function calls are unwrapped).
fn classify(e: &EvalAltResult) -> CallError {
    let mut inner = e;
    while let EvalAltResult::ErrorInFunctionCall(_, _, next, _) = inner {
        inner = next.as_ref();
    }
    let kind = match inner {
        EvalAltResult::ErrorTooManyOperations(_) => "operations",
        EvalAltResult::ErrorTerminated(..) => "timeout",
        EvalAltResult::ErrorStackOverflow(_)
        | EvalAltResult::ErrorDataTooLarge(..)
        | EvalAltResult::ErrorTooManyModules(_) => "limit",
        _ => "runtime",
    };
    CallError {
        kind,
        message: e.to_string(),
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Compile `text`; an error reads `FILE:LINE:COLUMN: message`. The hooks must take the
/// documented parameters.
fn compile(engine: &Engine, path: &Path, text: String) -> Result<Script, String> {
    let ast = engine
        .compile(&text)
        .map_err(|rhai::ParseError(kind, pos)| {
            format!(
                "{}:{}:{}: {kind}",
                path.display(),
                pos.line().unwrap_or(0),
                pos.position().unwrap_or(0),
            )
        })?;
    let mut has = [false, false];
    for f in ast.iter_functions() {
        for (i, (name, params)) in [("admit", "task, tenant"), ("place", "task, workers")]
            .into_iter()
            .enumerate()
        {
            if f.name == name {
                if f.params.len() != 2 {
                    return Err(format!(
                        "{}: {name} takes {} parameters; it must be {name}({params})",
                        path.display(),
                        f.params.len()
                    ));
                }
                has[i] = true;
            }
        }
    }
    Ok(Script {
        ast,
        text,
        admit: has[0],
        place: has[1],
    })
}

/// Reload the policy script whenever it changes (checked every second).
pub async fn watch(orch: Arc<crate::state::Orchestrator>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if orch.is_shutting_down() {
            return;
        }
        if let Some(p) = &orch.policy {
            p.reload_if_changed(&orch.metrics);
        }
    }
}
