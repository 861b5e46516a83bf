//! What the policy script sees (read-only Rhai maps built per call) and what it may answer
//! (checked strictly: an unknown key or a wrong type is an error, so the call falls back).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use llorch_wire::tasks::Priority;
use rhai::{Array, Dynamic, ImmutableString, Map};

use crate::registry::WorkerEntry;

/// Longest rejection message kept (characters).
const MAX_MESSAGE: usize = 1000;
/// Most names in a `pools` or `workers` answer.
const MAX_NAMES: usize = 1000;
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// What the admission hook is told about a task and its caller.
#[derive(Debug, Clone)]
pub struct AdmitInput<'a> {
    pub model: &'a str,
    pub priority: Priority,
    pub tenant: &'a str,
    /// The tenant key used, by id (none for admin tokens and open access).
    pub key_id: Option<&'a str>,
    pub admin: bool,
    /// `session_id` (OpenAI `user`).
    pub session: Option<&'a str>,
    /// Upper bound on the prompt's tokens (without tokenizing).
    pub prompt_tokens: usize,
    pub max_tokens: u32,
    pub deadline_ms: Option<u64>,
}

/// What the placement hook is told about the task being placed.
#[derive(Debug, Clone)]
pub struct PlaceInput<'a> {
    pub task_id: &'a str,
    pub model: &'a str,
    pub priority: Priority,
    pub tenant: &'a str,
}

/// The admission hook's answer; the default changes nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Refuse the task with this message (403 `POLICY_REJECTED`).
    pub reject: Option<String>,
    /// Queue it in this class instead.
    pub priority: Option<Priority>,
    /// Place it only on these workers / pools.
    pub route: Option<Arc<Route>>,
}

/// Workers a task may go to, by worker id and/or pool name (both given: both must match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub pools: Option<Vec<String>>,
    pub workers: Option<Vec<String>>,
    /// Identifies equal routes (the queue asks placement once per model and route); never 0.
    pub key: u64,
}

impl Route {
    /// A route over `pools` and `workers`.
    pub fn new(pools: Option<Vec<String>>, workers: Option<Vec<String>>) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&pools, &workers).hash(&mut h);
        Self {
            pools,
            workers,
            key: h.finish() | 1,
        }
    }

    /// Whether worker `id` on `pool` may take the task.
    pub fn allows(&self, id: &str, pool: &str) -> bool {
        self.pools
            .as_ref()
            .is_none_or(|p| p.iter().any(|x| x == pool))
            && self
                .workers
                .as_ref()
                .is_none_or(|w| w.iter().any(|x| x == id))
    }
}

/// Which pool each worker runs on, as scripts see it: a fleet worker's pool, a static
/// worker's configured `pool`, else `""`.
#[derive(Debug, Default)]
pub struct Pools {
    pub by_id: HashMap<String, String>,
    pub by_url: HashMap<String, String>,
}

impl Pools {
    /// The pool of `w`.
    pub fn of(&self, w: &WorkerEntry) -> &str {
        self.by_id
            .get(&w.reg.worker_id)
            .or_else(|| self.by_url.get(w.reg.url.trim_end_matches('/')))
            .map_or("", String::as_str)
    }
}

fn s(v: &str) -> Dynamic {
    Dynamic::from(ImmutableString::from(v))
}

fn int(v: u64) -> Dynamic {
    Dynamic::from_int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// `hour` (0-23), `minute`, `weekday` (`mon`..`sun`), all UTC, and `unix_ms`.
fn add_time(m: &mut Map, now_ms: u64) {
    let minutes = now_ms / 60_000;
    // 1970-01-01 was a Thursday
    let weekday = ((now_ms / 86_400_000 + 3) % 7) as usize;
    m.insert("hour".into(), int(minutes / 60 % 24));
    m.insert("minute".into(), int(minutes % 60));
    m.insert("weekday".into(), s(WEEKDAYS[weekday]));
    m.insert("unix_ms".into(), int(now_ms));
}

/// `(task, tenant)` for `admit`.
pub(super) fn admit_args(i: &AdmitInput, now_ms: u64) -> (Map, Map) {
    let mut task = Map::new();
    task.insert("model".into(), s(i.model));
    task.insert("priority".into(), s(i.priority.as_str()));
    task.insert("prompt_tokens".into(), int(i.prompt_tokens as u64));
    task.insert("max_tokens".into(), int(i.max_tokens.into()));
    task.insert("session".into(), s(i.session.unwrap_or("")));
    task.insert(
        "deadline_ms".into(),
        i.deadline_ms.map_or(Dynamic::UNIT, int),
    );
    add_time(&mut task, now_ms);
    let mut tenant = Map::new();
    tenant.insert("name".into(), s(i.tenant));
    tenant.insert("key_id".into(), s(i.key_id.unwrap_or("")));
    tenant.insert("admin".into(), Dynamic::from_bool(i.admin));
    (task, tenant)
}

/// `(task, workers)` for `place`: the candidates in the order given.
pub(super) fn place_args(
    i: &PlaceInput,
    candidates: &[&WorkerEntry],
    pools: &Pools,
    now_ms: u64,
) -> (Map, Array) {
    let mut task = Map::new();
    task.insert("id".into(), s(i.task_id));
    task.insert("model".into(), s(i.model));
    task.insert("priority".into(), s(i.priority.as_str()));
    task.insert("tenant".into(), s(i.tenant));
    add_time(&mut task, now_ms);
    let workers = candidates
        .iter()
        .map(|w| {
            let total = w.reg.slots_total.max(1);
            let mut m = Map::new();
            m.insert("id".into(), s(&w.reg.worker_id));
            m.insert("pool".into(), s(pools.of(w)));
            m.insert("model".into(), s(&w.reg.model));
            m.insert("backend".into(), s(&w.reg.backend));
            m.insert("slots_total".into(), int(w.reg.slots_total.into()));
            m.insert(
                "slots_free".into(),
                int(w.reg.slots_total.saturating_sub(w.busy).into()),
            );
            m.insert("busy".into(), int(w.busy.into()));
            m.insert(
                "load".into(),
                Dynamic::from_float(f64::from(w.busy) / f64::from(total)),
            );
            Dynamic::from_map(m)
        })
        .collect();
    (task, workers)
}

fn string(key: &str, v: Dynamic) -> Result<String, String> {
    let ty = v.type_name();
    v.into_string()
        .map_err(|_| format!("{key} must be a string, not {ty}"))
}

fn names(key: &str, v: Dynamic) -> Result<Vec<String>, String> {
    let ty = v.type_name();
    let arr = v
        .into_array()
        .map_err(|_| format!("{key} must be an array of strings, not {ty}"))?;
    if arr.len() > MAX_NAMES {
        return Err(format!(
            "{key} has {} names (at most {MAX_NAMES})",
            arr.len()
        ));
    }
    arr.into_iter().map(|x| string(key, x)).collect()
}

/// Read `admit`'s answer: `()` (no change) or a map of `reject`, `priority`, `pools`, `workers`.
pub(super) fn decision(out: Dynamic) -> Result<Decision, String> {
    if out.is_unit() {
        return Ok(Decision::default());
    }
    let ty = out.type_name();
    let Some(map) = out.try_cast::<Map>() else {
        return Err(format!("admit must return a map or (), not {ty}"));
    };
    let mut d = Decision::default();
    let (mut pools, mut workers) = (None, None);
    for (k, v) in map {
        match k.as_str() {
            "reject" => {
                let msg = string("reject", v)?;
                d.reject = Some(if msg.trim().is_empty() {
                    "refused by the policy".into()
                } else {
                    msg.chars().take(MAX_MESSAGE).collect()
                });
            }
            "priority" => {
                d.priority = Some(match string("priority", v)?.as_str() {
                    "interactive" => Priority::Interactive,
                    "batch" => Priority::Batch,
                    other => {
                        return Err(format!(
                            "priority must be \"interactive\" or \"batch\", not {other:?}"
                        ))
                    }
                })
            }
            "pools" => pools = Some(names("pools", v)?),
            "workers" => workers = Some(names("workers", v)?),
            other => {
                return Err(format!(
                "admit returned an unknown key {other:?} (known: reject, priority, pools, workers)"
            ))
            }
        }
    }
    if pools.is_some() || workers.is_some() {
        d.route = Some(Arc::new(Route::new(pools, workers)));
    }
    Ok(d)
}

/// Read `place`'s answer: `()` (built-in order) or one finite number per candidate.
pub(super) fn scores(out: Dynamic, n: usize) -> Result<Option<Vec<f64>>, String> {
    if out.is_unit() {
        return Ok(None);
    }
    let ty = out.type_name();
    let arr = out
        .into_array()
        .map_err(|_| format!("place must return an array of numbers or (), not {ty}"))?;
    if arr.len() != n {
        return Err(format!(
            "place returned {} scores for {n} workers (one per worker, in the order given)",
            arr.len()
        ));
    }
    arr.into_iter()
        .map(|v| {
            let x = v
                .as_float()
                .or_else(|_| v.as_int().map(|i| i as f64))
                .map_err(|_| format!("a score must be a number, not {}", v.type_name()))?;
            if x.is_finite() {
                Ok(x)
            } else {
                Err(format!("a score must be finite, not {x}"))
            }
        })
        .collect::<Result<Vec<f64>, String>>()
        .map(Some)
}
