//! Constrained decoding for llama-orch: a [`Constraint`] (JSON schema, any JSON object, regex,
//! Lark grammar) is compiled with [llguidance](https://crates.io/crates/llguidance) against the
//! model's vocabulary into a [`Guide`], which at every step says which tokens may come next.
//!
//! - [`Compiler::new`] builds the token trie once per model, from each token's raw bytes
//!   (special tokens are marked so that text can never produce them).
//! - [`Compiler::compile`] turns one request's constraint into a [`Guide`]: this is where a bad
//!   schema, regex or grammar is found, with a message naming where (a JSON pointer into the
//!   schema when one can be found) and why.
//! - [`Guide::mask`] bans every token that cannot continue a match (end-of-sequence tokens only
//!   where the grammar may end); [`Guide::commit`] advances by the sampled token.
//! - [`check`] validates a constraint without a model (against a byte-level vocabulary): the
//!   orchestrator uses it to answer 400 before queueing anything.

#![forbid(unsafe_code)]

mod locate;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use llorch_wire::{Constraint, FieldError};
use serde_json::{json, Value};

/// Why a constraint could not be used: the field it came from (with a JSON pointer into the
/// schema when the problem could be located, e.g. `constraint.json_schema#/properties/age`) and
/// the compiler's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConstraintError {
    /// Where: the request field, plus `#<json pointer>` inside a schema when known.
    pub field: String,
    /// Why, in the compiler's words.
    pub message: String,
}

impl ConstraintError {
    /// The error as a request field error (constraint `compiles`).
    pub fn to_field_error(&self) -> FieldError {
        FieldError::new(
            self.field.clone(),
            "compiles",
            format!("{}: {}", self.field, self.message),
        )
    }

    /// The same error reported under another field prefix: `constraint.json_schema#/x` becomes
    /// `<prefix>#/x` (the OpenAI layer names `response_format.json_schema.schema`).
    pub fn renamed(mut self, prefix: &str) -> Self {
        let at = self.field.find('#').map_or("", |i| &self.field[i..]);
        self.field = format!("{prefix}{at}");
        self
    }
}

/// JSON output layout forced on schemas that do not set their own `x-guidance` options: one
/// space after `:` and `,`, no other whitespace (small models otherwise loop on newlines).
fn json_layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// Compiles constraints for one vocabulary. Cheap to share (`Arc` inside); `Send + Sync`.
#[derive(Clone)]
pub struct Compiler {
    factory: Arc<ParserFactory>,
    vocab_size: usize,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

impl Compiler {
    /// Build the token trie of a vocabulary: `tokens[id] = (raw bytes, is_special)`. `stop_ids`
    /// (end of sequence / end of turn) are the tokens allowed where the grammar may end; at
    /// least one is needed.
    pub fn new(tokens: &[(Vec<u8>, bool)], stop_ids: &[u32]) -> Result<Compiler, String> {
        let n = tokens.len();
        let stops: Vec<u32> = stop_ids
            .iter()
            .copied()
            .filter(|&s| (s as usize) < n)
            .collect();
        let Some(&eos) = stops.first() else {
            return Err(
                "constrained decoding needs an end-of-sequence token in the vocabulary".into(),
            );
        };
        let words: Vec<Vec<u8>> = tokens
            .iter()
            .map(|(bytes, special)| {
                if *special && !bytes.is_empty() {
                    let mut w = Vec::with_capacity(bytes.len() + 1);
                    w.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    w.extend_from_slice(bytes);
                    w
                } else {
                    bytes.clone()
                }
            })
            .collect();
        let info = TokRxInfo::new(n as u32, eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&stops);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        Self::from_env(&env)
    }

    fn from_env(env: &TokEnv) -> Result<Compiler, String> {
        let mut factory = ParserFactory::new_simple(env).map_err(|e| format!("{e:#}"))?;
        factory.quiet();
        Ok(Compiler {
            vocab_size: env.tok_trie().vocab_size(),
            factory: Arc::new(factory),
        })
    }

    /// A compiler over single bytes: checks that a constraint compiles without any model.
    pub fn bytes() -> &'static Compiler {
        static BYTES: OnceLock<Compiler> = OnceLock::new();
        BYTES.get_or_init(|| {
            Self::from_env(&ApproximateTokEnv::single_byte_env())
                .expect("the single-byte vocabulary compiles")
        })
    }

    /// Number of token ids the trie knows (masks ban every id at or above it).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Compile `c` into a fresh [`Guide`] positioned at the start of the output.
    pub fn compile(&self, c: &Constraint) -> Result<Guide, ConstraintError> {
        let t0 = Instant::now();
        let fail = |message: String, schema: Option<&Value>| {
            let at = schema.and_then(|s| locate::pointer(s, &message));
            ConstraintError {
                field: match at {
                    Some(p) => format!("{}#{p}", c.field()),
                    None => c.field().to_string(),
                },
                message,
            }
        };
        let (grammar, schema) = match c {
            Constraint::JsonSchema(schema) => {
                let mut s = schema.clone();
                if let Value::Object(o) = &mut s {
                    o.entry("x-guidance").or_insert_with(json_layout);
                }
                (TopLevelGrammar::from_json_schema(s), Some(schema))
            }
            Constraint::JsonObject(_) => (
                TopLevelGrammar::from_json_schema(
                    json!({"type": "object", "x-guidance": json_layout()}),
                ),
                None,
            ),
            Constraint::Regex(rx) => (TopLevelGrammar::from_regex(rx), None),
            Constraint::Lark(g) => (TopLevelGrammar::from_lark(g.clone()), None),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| fail(format!("{e:#}"), schema))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(fail(e, schema));
        }
        Ok(Guide {
            matcher,
            compile_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// A constraint for "either a JSON value valid under `schema` or free text that does not start
/// with `{`, `[` or whitespace" (tool calling with `tool_choice: auto`: the model chooses between
/// a call and a plain answer, and a call, once begun, is decoded under the schema).
pub fn json_or_text(schema: &Value) -> Constraint {
    let mut s = schema.clone();
    if let Value::Object(o) = &mut s {
        o.entry("x-guidance").or_insert_with(json_layout);
    }
    Constraint::Lark(format!(
        "start: call | TEXT\ncall: %json {s}\nTEXT: /[^\\[{{ \\t\\r\\n](.|\\n)*/\n"
    ))
}

/// Check that `c` compiles (against a byte-level vocabulary), without a model. The message of a
/// bad schema names where (JSON pointer) and why.
pub fn check(c: &Constraint) -> Result<(), ConstraintError> {
    Compiler::bytes().compile(c).map(|_| ())
}

/// Errors while decoding under a constraint (the grammar reached a state no token can follow).
#[derive(Debug, Clone, thiserror::Error)]
#[error("constrained decoding failed: {0}")]
pub struct GuideError(pub String);

/// One generation's position in its constraint.
pub struct Guide {
    matcher: Matcher,
    compile_ms: f64,
}

impl std::fmt::Debug for Guide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guide")
            .field("compile_ms", &self.compile_ms)
            .finish_non_exhaustive()
    }
}

impl Clone for Guide {
    fn clone(&self) -> Self {
        Guide {
            matcher: self.matcher.deep_clone(),
            compile_ms: self.compile_ms,
        }
    }
}

impl Guide {
    /// How long compiling took, in milliseconds.
    pub fn compile_ms(&self) -> f64 {
        self.compile_ms
    }

    /// The tokens allowed next (end-of-sequence tokens only where the output may end; only
    /// them once it must end).
    pub fn allowed(&mut self) -> Result<SimpleVob, GuideError> {
        self.matcher
            .compute_mask_or_eos()
            .map_err(|e| GuideError(format!("{e:#}")))
    }

    /// Ban (set to -inf) every logit whose token may not come next. Errors when no token at all
    /// is allowed.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), GuideError> {
        let allowed = self.allowed()?;
        if allowed.is_zero() {
            return Err(GuideError("no token can continue the output".into()));
        }
        let n = allowed.len();
        for (i, l) in logits.iter_mut().enumerate() {
            if i >= n || !allowed.is_allowed(i as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advance past the sampled token (which [`mask`](Guide::mask) allowed).
    pub fn commit(&mut self, id: u32) -> Result<(), GuideError> {
        self.matcher
            .consume_token(id)
            .map_err(|e| GuideError(format!("{e:#}")))
    }

    /// Whether the output so far is a complete match (it may end here).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// Whether the output is complete and nothing may follow but end-of-sequence.
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }
}

#[cfg(test)]
mod tests;
