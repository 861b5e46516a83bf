//! Building a [`Tokenizer`] from GGUF `tokenizer.*` metadata.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::spm::SpmModel;
use super::table::{spm_decode_into, ByteDecoder, ByteTable, StrTable};
use super::{Encoder, Tokenizer, FLAG_LITERAL, FLAG_SPECIAL};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// The llama-3 pre-tokenizer split pattern.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 pre-tokenizer split pattern (single digits).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn get<'a>(content: &'a Content, key: &str) -> Option<&'a Value> {
    content.metadata.get(key)
}

/// Any GGUF integer as i64.
fn as_int(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        Value::Bool(b) => *b as i64,
        _ => return None,
    })
}

fn get_id(content: &Content, key: &str, n_vocab: usize) -> Option<u32> {
    let id = as_int(get(content, key)?)?;
    (0..n_vocab as i64).contains(&id).then_some(id as u32)
}

fn get_bool(content: &Content, key: &str) -> Option<bool> {
    match get(content, key)? {
        Value::Bool(b) => Some(*b),
        v => as_int(v).map(|x| x != 0),
    }
}

fn get_str<'a>(content: &'a Content, key: &str) -> Option<&'a str> {
    match get(content, key)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn get_strings<'a>(content: &'a Content, key: &str) -> Result<Option<Vec<&'a str>>> {
    let Some(v) = get(content, key) else {
        return Ok(None);
    };
    let arr = v.to_vec().map_err(|e| anyhow!("GGUF {key}: {e}"))?;
    let strings = arr
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.as_str()),
            _ => Err(anyhow!("GGUF {key}[{i}] is not a string")),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(strings))
}

/// Build the tokenizer that `tokenizer.ggml.model` names.
pub(super) fn from_gguf(content: &Content) -> Result<Tokenizer> {
    let model = get_str(content, "tokenizer.ggml.model").ok_or_else(|| {
        anyhow!("GGUF has no tokenizer.ggml.model: not a model file with a tokenizer")
    })?;
    let tokens = get_strings(content, "tokenizer.ggml.tokens")?
        .ok_or_else(|| anyhow!("GGUF has no tokenizer.ggml.tokens"))?;
    let n = tokens.len();
    let types: Vec<i64> = match get(content, "tokenizer.ggml.token_type") {
        Some(v) => {
            let arr = v
                .to_vec()
                .map_err(|e| anyhow!("GGUF tokenizer.ggml.token_type: {e}"))?;
            arr.iter()
                .map(|v| as_int(v).unwrap_or(TYPE_NORMAL))
                .collect()
        }
        None => vec![TYPE_NORMAL; n],
    };
    if types.len() != n {
        bail!(
            "GGUF tokenizer.ggml.token_type has {} entries for {n} tokens",
            types.len()
        );
    }
    let flags: Vec<u8> = types
        .iter()
        .map(|&t| match t {
            TYPE_CONTROL | TYPE_UNKNOWN => FLAG_SPECIAL | FLAG_LITERAL,
            TYPE_USER_DEFINED => FLAG_LITERAL,
            _ => 0,
        })
        .collect();

    let (kind, encoder, spm) = match model {
        "gpt2" => ("gguf-bpe", build_bpe(content, &tokens, &flags)?, false),
        "llama" => ("gguf-spm", build_spm(content, &tokens, &flags)?, true),
        other => bail!(
            "GGUF tokenizer.ggml.model = {other:?} is not supported (supported: gpt2 byte-level \
             BPE, llama SentencePiece)"
        ),
    };

    let mut pieces = StrTable::with_capacity(n);
    let mut bytes = ByteTable::with_capacity(n, n * 6);
    let byte_decoder = ByteDecoder::new();
    let mut buf = Vec::with_capacity(64);
    for (tok, &flag) in tokens.iter().zip(&flags) {
        pieces.push(Some(tok));
        buf.clear();
        if flag & FLAG_LITERAL != 0 {
            buf.extend_from_slice(tok.as_bytes());
        } else if spm {
            spm_decode_into(tok, &mut buf);
        } else {
            byte_decoder.decode_into(tok, &mut buf);
        }
        bytes.push(&buf);
    }

    let bos = get_id(content, "tokenizer.ggml.bos_token_id", n);
    let eos = get_id(content, "tokenizer.ggml.eos_token_id", n);
    let add_bos = get_bool(content, "tokenizer.ggml.add_bos_token").unwrap_or(spm);
    let extra: Vec<u32> = ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]
        .iter()
        .filter_map(|k| get_id(content, k, n))
        .collect();
    let mut tok = Tokenizer {
        kind,
        encoder,
        pieces,
        bytes,
        flags,
        bos,
        eos,
        add_bos,
        stop_ids: Vec::new(),
        chat_template: get_str(content, "tokenizer.chat_template").map(str::to_owned),
    };
    if let Encoder::Hf(hf) = &mut tok.encoder {
        if let (true, Some(b)) = (add_bos, tok.bos) {
            // Record BOS in the exported tokenizer.json too; `encode` adds it itself.
            let text = tokens[b as usize];
            let post = TemplateProcessing::builder()
                .try_single(format!("{text} $A"))
                .and_then(|t| t.try_pair(format!("{text} $A $B:1")))
                .map_err(|e| anyhow!("BOS template: {e}"))?
                .special_tokens(vec![(text.to_string(), b)])
                .build()
                .context("BOS post-processor")?;
            hf.with_post_processor(Some(post));
        }
    }
    tok.set_stop_ids(&extra);
    Ok(tok)
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(pattern.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow!("pre-tokenizer regex: {e}"))?;
        Ok(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into())
    };
    Ok(match pre {
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" | "minerva-7b" => {
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into()
        }
        "llama3" | "llama-bpe" | "dbrx" | "smaug-bpe" => split(LLAMA3_PATTERN)?,
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_PATTERN)?,
        "gpt2" | "gpt-2" | "default" | "" | "olmo" | "mpt" | "stablelm2" | "jais" => {
            ByteLevel::new(false, true, true).into()
        }
        other => {
            tracing::warn!(
                pre = other,
                "unknown tokenizer.ggml.pre; using GPT-2 byte-level splitting"
            );
            ByteLevel::new(false, true, true).into()
        }
    })
}

/// Byte-level BPE from tokens + merges, with control/user-defined tokens as added tokens.
fn build_bpe(content: &Content, tokens: &[&str], flags: &[u8]) -> Result<Encoder> {
    let merges_raw = get_strings(content, "tokenizer.ggml.merges")?
        .ok_or_else(|| anyhow!("GGUF gpt2 tokenizer has no tokenizer.ggml.merges"))?;
    let mut vocab = Vocab::default();
    vocab.reserve(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        vocab.entry((*t).to_owned()).or_insert(id as u32);
    }
    let mut merges = Vec::with_capacity(merges_raw.len());
    let mut joined = String::new();
    let mut dropped = 0usize;
    for m in merges_raw {
        let Some((a, b)) = m.split_once(' ') else {
            dropped += 1;
            continue;
        };
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        if vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(joined.as_str()) {
            merges.push((a.to_owned(), b.to_owned()));
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "GGUF merges skipped: malformed or naming tokens outside the vocabulary"
        );
    }
    let pre = get_str(content, "tokenizer.ggml.pre").unwrap_or("default");
    let ignore_merges = matches!(pre, "llama3" | "llama-bpe");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| anyhow!("building BPE model: {e}"))?;
    let mut hf = tokenizers::Tokenizer::new(bpe);
    hf.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    hf.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    let (special, user): (Vec<_>, Vec<_>) = tokens
        .iter()
        .zip(flags)
        .filter(|(t, f)| **f & FLAG_LITERAL != 0 && !t.is_empty())
        .partition(|(_, f)| **f & FLAG_SPECIAL != 0);
    let special: Vec<AddedToken> = special
        .into_iter()
        .map(|(t, _)| AddedToken::from(*t, true))
        .collect();
    let user: Vec<AddedToken> = user
        .into_iter()
        .map(|(t, _)| AddedToken::from(*t, false))
        .collect();
    hf.add_special_tokens(&special);
    hf.add_tokens(&user);
    Ok(Encoder::Hf(Box::new(hf)))
}

/// SentencePiece-style model from tokens + scores.
fn build_spm(content: &Content, tokens: &[&str], flags: &[u8]) -> Result<Encoder> {
    let n = tokens.len();
    let scores: Vec<f32> = match get(content, "tokenizer.ggml.scores") {
        Some(v) => {
            let arr = v
                .to_vec()
                .map_err(|e| anyhow!("GGUF tokenizer.ggml.scores: {e}"))?;
            arr.iter().map(|v| v.to_f32().unwrap_or(0.0)).collect()
        }
        None => bail!("GGUF llama tokenizer has no tokenizer.ggml.scores"),
    };
    if scores.len() != n {
        bail!(
            "GGUF tokenizer.ggml.scores has {} entries for {n} tokens",
            scores.len()
        );
    }
    let literal: Vec<(String, u32)> = tokens
        .iter()
        .zip(flags)
        .enumerate()
        .filter(|(_, (_, f))| **f & FLAG_LITERAL != 0)
        .map(|(id, (t, _))| ((*t).to_owned(), id as u32))
        .collect();
    let unk = get_id(content, "tokenizer.ggml.unknown_token_id", n);
    let add_space_prefix = get_bool(content, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
    Ok(Encoder::Spm(Box::new(SpmModel::new(
        tokens,
        scores,
        literal,
        unk,
        add_space_prefix,
    ))))
}
