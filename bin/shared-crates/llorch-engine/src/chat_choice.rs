//! Which chat template a model is served with (`--chat-template`), and the load-time probe that
//! tells an instruction-tuned model from a base model.
//!
//! A base (pretrained-only) model has turn tokens in its vocabulary (`<start_of_turn>`,
//! `<|im_end|>`) that it never learned: fed its family's chat format it echoes the question and
//! never ends its turn. The probe asks the model itself: after a finished assistant reply in the
//! template's format, how likely is the template's end-of-turn token? Instruction-tuned models
//! put real mass there (SmolLM2-Instruct: p ≈ 0.4); base models put none (Gemma 3 270M base:
//! log p = −35). Below [`UNTRAINED_LOGPROB`] the worker serves chat through the plain-text
//! transcript template instead, which base models continue coherently.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result};
use llorch_wire::ChatMessage;

use crate::chat::ChatTemplate;
use crate::model::{Architecture, Logits, Transformer};
use crate::tokenizer::Tokenizer;

/// End-of-turn log-probability below which a template's turn token counts as never learned
/// (p < 4.5e-5; measured: −0.9 on an instruction-tuned model, −35 on a base model).
pub const UNTRAINED_LOGPROB: f32 = -10.0;

/// How to pick the chat template (`--chat-template`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ChatTemplateChoice {
    /// The model's own template (or its family's built-in one), unless the probe shows the
    /// model never learned its turn tokens; then the transcript template.
    #[default]
    Auto,
    /// The model's own template (or its family's built-in one), without the probe.
    Model,
    /// A built-in template by name.
    Builtin(Builtin),
    /// A Jinja template file.
    File(PathBuf),
}

/// The built-in templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Chatml,
    Gemma,
    Transcript,
}

impl FromStr for ChatTemplateChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => ChatTemplateChoice::Auto,
            "model" => ChatTemplateChoice::Model,
            "chatml" => ChatTemplateChoice::Builtin(Builtin::Chatml),
            "gemma" => ChatTemplateChoice::Builtin(Builtin::Gemma),
            "transcript" => ChatTemplateChoice::Builtin(Builtin::Transcript),
            "" => return Err("empty chat template choice".into()),
            path if path.ends_with(".jinja") || path.contains(std::path::MAIN_SEPARATOR) => {
                ChatTemplateChoice::File(PathBuf::from(path))
            }
            other => {
                return Err(format!(
                    "unknown chat template `{other}`: use auto, model, chatml, gemma, transcript, \
                     or the path of a .jinja file"
                ))
            }
        })
    }
}

/// What the worker reports about the template in use.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplateInfo {
    /// `model`, `chatml`, `gemma`, `transcript`, or the file's path.
    pub name: String,
    /// Why this template: `model metadata`, `built-in for <arch>`, `--chat-template`, or the
    /// probe's finding.
    pub reason: String,
    /// The probe's result, when it ran.
    pub probe: Option<TurnProbe>,
}

/// Result of the end-of-turn probe.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnProbe {
    /// The end-of-turn token's text.
    pub token: String,
    /// Its log-probability right after a finished assistant reply.
    pub logprob: f32,
}

impl TurnProbe {
    /// Whether the model has learned this end-of-turn token.
    pub fn learned(&self) -> bool {
        self.logprob >= UNTRAINED_LOGPROB
    }
}

/// Pick the template for a loaded model.
pub fn choose(
    choice: &ChatTemplateChoice,
    tok: &Tokenizer,
    arch: Architecture,
    model: &Transformer,
) -> Result<(ChatTemplate, ChatTemplateInfo)> {
    let info = |name: &str, reason: String, probe| ChatTemplateInfo {
        name: name.to_string(),
        reason,
        probe,
    };
    match choice {
        ChatTemplateChoice::Builtin(b) => {
            let t = match b {
                Builtin::Chatml => ChatTemplate::chatml(),
                Builtin::Gemma => ChatTemplate::gemma(),
                Builtin::Transcript => ChatTemplate::transcript(),
            };
            let i = info(t.name(), "--chat-template".into(), None);
            Ok((t, i))
        }
        ChatTemplateChoice::File(path) => {
            let src = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read chat template", path.display()))?;
            let t = ChatTemplate::new(&src, tok.bos_token(), tok.eos_token())
                .with_context(|| format!("{}: invalid chat template", path.display()))?
                .named(path.display().to_string());
            let i = info(t.name(), "--chat-template".into(), None);
            Ok((t, i))
        }
        ChatTemplateChoice::Model => {
            let (t, reason) = family_default(tok, arch)?;
            let i = info(t.name(), reason, None);
            Ok((t, i))
        }
        ChatTemplateChoice::Auto => {
            let (t, reason) = family_default(tok, arch)?;
            let probe = probe_end_of_turn(&t, tok, model).unwrap_or_else(|e| {
                tracing::debug!(error = %format!("{e:#}"), "end-of-turn probe skipped");
                None
            });
            match probe {
                Some(p) if !p.learned() => {
                    let reason = format!(
                        "base model: it gives `{}` log-probability {:.1} after a finished reply \
                         (a chat model gives > {UNTRAINED_LOGPROB}), so the {} template's turns would \
                         not work; chat is served as a plain transcript",
                        p.token,
                        p.logprob,
                        t.name()
                    );
                    let t = ChatTemplate::transcript();
                    let i = info(t.name(), reason, Some(p));
                    Ok((t, i))
                }
                probe => {
                    let i = info(t.name(), reason, probe);
                    Ok((t, i))
                }
            }
        }
    }
}

/// The model's own template; without one, Gemma's turn format for Gemma 3, else ChatML.
fn family_default(tok: &Tokenizer, arch: Architecture) -> Result<(ChatTemplate, String)> {
    Ok(match tok.chat_template() {
        Some(src) => (
            ChatTemplate::new(src, tok.bos_token(), tok.eos_token())
                .context("invalid chat template in model")?
                .named("model"),
            "model metadata".into(),
        ),
        None if arch == Architecture::Gemma3 => (
            ChatTemplate::gemma(),
            "built-in for gemma3 (none in the model)".into(),
        ),
        None => (
            ChatTemplate::chatml(),
            "built-in default (none in the model)".into(),
        ),
    })
}

/// Render a one-exchange conversation, run the model up to the end of the assistant's reply,
/// and read the log-probability of the token the template puts there. `None` when the
/// template does not end turns with a special token (nothing to probe).
pub fn probe_end_of_turn(
    t: &ChatTemplate,
    tok: &Tokenizer,
    model: &Transformer,
) -> Result<Option<TurnProbe>> {
    let msg = |role: &str, content: &str| ChatMessage {
        role: role.into(),
        content: content.into(),
    };
    let reply = "Hello! How can I help you today?";
    let asked = t.render(&[msg("user", "Hi")], true)?;
    let full = t.render(&[msg("user", "Hi"), msg("assistant", reply)], false)?;
    let prefix = format!("{asked}{reply}");
    let Some(suffix) = full.strip_prefix(&prefix) else {
        return Ok(None);
    };
    let Some(&end) = tok.encode(suffix, false)?.first() else {
        return Ok(None);
    };
    if !tok.is_special(end) {
        return Ok(None);
    }
    let bos = !tok
        .bos_token()
        .is_some_and(|b| !b.is_empty() && prefix.starts_with(b));
    let ids = tok.encode(&prefix, bos)?;
    let mut cache = model.new_cache(ids.len())?;
    let logits: Vec<f32> = model
        .forward(&ids, &mut cache, Logits::Last)?
        .squeeze(0)?
        .to_vec1()?;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    Ok(Some(TurnProbe {
        token: tok.piece(end).unwrap_or_default().to_string(),
        logprob: logits[end as usize] - lse,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse(), Ok(ChatTemplateChoice::Auto));
        assert_eq!(
            "transcript".parse(),
            Ok(ChatTemplateChoice::Builtin(Builtin::Transcript))
        );
        assert_eq!(
            "my.jinja".parse(),
            Ok(ChatTemplateChoice::File(PathBuf::from("my.jinja")))
        );
        let err = "llama9".parse::<ChatTemplateChoice>().unwrap_err();
        assert!(
            err.contains("auto, model, chatml, gemma, transcript"),
            "{err}"
        );
    }
}
