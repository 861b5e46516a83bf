//! Building a [`Tokenizer`] from a Hugging Face model directory.

use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::table::{spm_decode_into, ByteDecoder, ByteTable, StrTable};
use super::{Encoder, Tokenizer, FLAG_LITERAL, FLAG_SPECIAL};

/// Parsed JSON of an optional file; `Null` when it does not exist.
fn read_json(path: &Path) -> Result<Value> {
    if !path.is_file() {
        return Ok(Value::Null);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// A token given as a string or as an added-token object `{"content": ...}`.
fn token_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

/// Ids given as one integer or a list of integers.
fn ids(v: &Value) -> Vec<u32> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .into_iter()
            .collect(),
        Value::Array(a) => a.iter().flat_map(ids).collect(),
        _ => Vec::new(),
    }
}

/// The template in `tokenizer_config.json`: a string, or a list of named templates.
fn config_template(cfg: &Value) -> Option<String> {
    match cfg.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named = |name: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
                    .and_then(|t| t.get("template")?.as_str())
            };
            named("default")
                .or_else(|| list.first().and_then(|t| t.get("template")?.as_str()))
                .map(str::to_owned)
        }
        _ => None,
    }
}

/// Whether a pipeline component (serialized) is or contains ByteLevel.
fn mentions_byte_level<T: serde::Serialize>(component: Option<&T>) -> bool {
    component
        .and_then(|c| serde_json::to_string(c).ok())
        .is_some_and(|s| s.contains("\"ByteLevel\""))
}

pub(super) fn from_dir(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        bail!(
            "{}: no tokenizer.json (a model directory needs a Hugging Face tokenizer.json)",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let hf =
        tokenizers::Tokenizer::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let tok_cfg = read_json(&dir.join("tokenizer_config.json"))?;
    let model_cfg = read_json(&dir.join("config.json"))?;
    let gen_cfg = read_json(&dir.join("generation_config.json"))?;

    // Id → piece, including added tokens (ids may have gaps).
    let vocab = hf.get_vocab(true);
    let n = vocab.values().max().map_or(0, |&m| m as usize + 1);
    let mut by_id: Vec<Option<&str>> = vec![None; n];
    for (piece, &id) in &vocab {
        by_id[id as usize] = Some(piece.as_str());
    }
    let mut flags = vec![0u8; n];
    for (id, added) in hf.get_added_tokens_decoder() {
        if let Some(f) = flags.get_mut(id as usize) {
            *f = FLAG_LITERAL | if added.special { FLAG_SPECIAL } else { 0 };
        }
    }
    let byte_level =
        mentions_byte_level(hf.get_decoder()) || mentions_byte_level(hf.get_pre_tokenizer());
    let byte_decoder = ByteDecoder::new();
    let mut pieces = StrTable::with_capacity(n);
    let mut bytes = ByteTable::with_capacity(n, n * 6);
    let mut buf = Vec::with_capacity(64);
    for (piece, &flag) in by_id.iter().zip(&flags) {
        pieces.push(*piece);
        buf.clear();
        let p = piece.unwrap_or("");
        if flag & FLAG_LITERAL != 0 {
            buf.extend_from_slice(p.as_bytes());
        } else if byte_level {
            byte_decoder.decode_into(p, &mut buf);
        } else {
            spm_decode_into(p, &mut buf);
        }
        bytes.push(&buf);
    }

    let lookup = |v: Option<&Value>| v.and_then(token_text).and_then(|t| hf.token_to_id(t));
    let first = |v: Option<&Value>| v.map(ids).and_then(|l| l.first().copied());
    let bos = lookup(tok_cfg.get("bos_token"))
        .or_else(|| first(model_cfg.get("bos_token_id")))
        .or_else(|| first(gen_cfg.get("bos_token_id")))
        .filter(|&id| (id as usize) < n);
    let eos = lookup(tok_cfg.get("eos_token"))
        .or_else(|| first(model_cfg.get("eos_token_id")))
        .or_else(|| first(gen_cfg.get("eos_token_id")))
        .filter(|&id| (id as usize) < n);
    let add_bos = match tok_cfg.get("add_bos_token").and_then(Value::as_bool) {
        Some(b) => b,
        None => post_processor_adds(&hf, bos)?,
    };
    let mut extra = Vec::new();
    for v in [model_cfg.get("eos_token_id"), gen_cfg.get("eos_token_id")]
        .into_iter()
        .flatten()
    {
        extra.extend(ids(v));
    }
    let jinja = dir.join("chat_template.jinja");
    let chat_template = if jinja.is_file() {
        Some(
            std::fs::read_to_string(&jinja)
                .with_context(|| format!("reading {}", jinja.display()))?,
        )
    } else {
        config_template(&tok_cfg)
    };

    let mut tok = Tokenizer {
        kind: "hf-json",
        encoder: Encoder::Hf(Box::new(hf)),
        pieces,
        bytes,
        flags,
        bos,
        eos,
        add_bos,
        stop_ids: Vec::new(),
        chat_template,
    };
    tok.set_stop_ids(&extra);
    Ok(tok)
}

/// Whether the tokenizer's own post-processor puts BOS first.
fn post_processor_adds(hf: &tokenizers::Tokenizer, bos: Option<u32>) -> Result<bool> {
    let Some(bos) = bos else { return Ok(false) };
    let with = hf
        .encode("a", true)
        .map_err(|e| anyhow!("probing the post-processor: {e}"))?;
    let without = hf
        .encode("a", false)
        .map_err(|e| anyhow!("probing the post-processor: {e}"))?;
    Ok(with.get_ids().first() == Some(&bos) && without.get_ids().first() != Some(&bos))
}
