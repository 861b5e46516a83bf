//! Log-probabilities in OpenAI's shapes, mapped from the worker's [`TokenLogprob`] (the model's
//! raw distribution, before temperature and filters): chat's
//! `choices[].logprobs = {content: [{token, logprob, bytes, top_logprobs}], refusal: null}` and
//! the legacy completions shape `{tokens, token_logprobs, top_logprobs, text_offset}`.
//! Contract: `.specs/openai.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::execute::TokenLogprob;

/// Most alternatives per token (`top_logprobs` on chat, `logprobs` on completions): the
/// worker's limit.
pub const MAX_TOP_LOGPROBS: u32 = crate::execute::LIMITS.max_logprobs;

/// A token's text as OpenAI shows it: its bytes as UTF-8, invalid sequences replaced (the exact
/// bytes are in `bytes`).
pub fn token_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `choices[].logprobs` of a chat completion or of one streamed chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    /// One entry per generated token, in order.
    pub content: Vec<ChatTokenLogprob>,
    /// Always `null` (no refusals here).
    pub refusal: Option<Vec<ChatTokenLogprob>>,
}

/// One generated token of a chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    /// The token's raw bytes (UTF-8 of `token` unless the token is part of a character).
    pub bytes: Option<Vec<u8>>,
    /// The `top_logprobs` most likely tokens at this position, most likely first.
    pub top_logprobs: Vec<ChatTopLogprob>,
}

/// One alternative of a [`ChatTokenLogprob`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

impl ChatLogprobs {
    /// The entries of `lps`.
    pub fn from_worker<'a>(lps: impl IntoIterator<Item = &'a TokenLogprob>) -> Self {
        let content = lps
            .into_iter()
            .map(|lp| ChatTokenLogprob {
                token: token_text(&lp.bytes),
                logprob: lp.logprob,
                bytes: Some(lp.bytes.clone()),
                top_logprobs: lp
                    .top
                    .iter()
                    .map(|t| ChatTopLogprob {
                        token: token_text(&t.bytes),
                        logprob: t.logprob,
                        bytes: Some(t.bytes.clone()),
                    })
                    .collect(),
            })
            .collect();
        Self {
            content,
            refusal: None,
        }
    }
}

/// `choices[].logprobs` of `/v1/completions` (OpenAI's legacy shape), parallel lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    /// Each generated token's text.
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    /// Per token: the `logprobs` most likely tokens' text → log-probability (tokens with the
    /// same text keep the likelier one).
    pub top_logprobs: Vec<BTreeMap<String, f32>>,
    /// Per token: the number of characters of the answer's text released before it.
    pub text_offset: Vec<u32>,
}

impl CompletionLogprobs {
    /// The entries of `lps`, each with its text offset.
    pub fn from_worker<'a>(lps: impl IntoIterator<Item = (&'a TokenLogprob, u32)>) -> Self {
        let mut out = Self::default();
        for (lp, offset) in lps {
            out.tokens.push(token_text(&lp.bytes));
            out.token_logprobs.push(lp.logprob);
            let mut top = BTreeMap::new();
            for t in &lp.top {
                top.entry(token_text(&t.bytes)).or_insert(t.logprob);
            }
            out.top_logprobs.push(top);
            out.text_offset.push(offset);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::TopLogprob;

    fn lp() -> TokenLogprob {
        TokenLogprob {
            id: 7,
            logprob: -0.5,
            bytes: b" hi".to_vec(),
            top: vec![
                TopLogprob {
                    id: 7,
                    logprob: -0.5,
                    bytes: b" hi".to_vec(),
                },
                TopLogprob {
                    id: 9,
                    logprob: -1.5,
                    bytes: vec![0xe2, 0x82],
                },
            ],
        }
    }

    #[test]
    fn chat_shape() {
        let v = serde_json::to_value(ChatLogprobs::from_worker([&lp()])).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"content": [{"token": " hi", "logprob": -0.5, "bytes": [32, 104, 105],
                "top_logprobs": [{"token": " hi", "logprob": -0.5, "bytes": [32, 104, 105]},
                                 {"token": "\u{fffd}", "logprob": -1.5, "bytes": [226, 130]}]}],
                "refusal": null})
        );
    }

    #[test]
    fn completion_shape() {
        let c = CompletionLogprobs::from_worker([(&lp(), 0), (&lp(), 3)]);
        assert_eq!(c.tokens, [" hi", " hi"]);
        assert_eq!(c.token_logprobs, [-0.5, -0.5]);
        assert_eq!(c.text_offset, [0, 3]);
        assert_eq!(c.top_logprobs[1].len(), 2);
        assert_eq!(c.top_logprobs[1][" hi"], -0.5);
    }
}
