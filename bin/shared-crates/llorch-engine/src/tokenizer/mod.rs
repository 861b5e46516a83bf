//! Tokenizers built from GGUF metadata or a Hugging Face `tokenizer.json`, and a UTF-8-safe
//! streaming detokenizer.
//!
//! Three kinds, one API:
//! - `gguf-bpe`: GGUF `tokenizer.ggml.model = gpt2`, byte-level BPE (the `tokenizers` crate) with
//!   the pre-tokenizer that `tokenizer.ggml.pre` names;
//! - `gguf-spm`: GGUF `tokenizer.ggml.model = llama`, SentencePiece-style merges by score with
//!   `<0xXX>` byte fallback ([`spm`]);
//! - `hf-json`: a model directory's `tokenizer.json`.
//!
//! Text is always encoded with the special tokens written in it parsed out. Decoding works on
//! raw bytes per token ([`Tokenizer::token_bytes`]), so `decode` and [`StreamDecoder`] agree
//! byte for byte. `decode` does not strip the leading space that SentencePiece's
//! `add_space_prefix` adds at encode time.

mod gguf;
mod hf;
mod spm;
mod stream;
mod table;

use anyhow::Result;

pub use stream::StreamDecoder;
use table::{ByteTable, StrTable};

/// Token flag: a control/special token (dropped by `decode(.., skip_special = true)`).
const FLAG_SPECIAL: u8 = 1;
/// Token flag: matched literally in input text (control, user-defined or added token).
const FLAG_LITERAL: u8 = 2;

/// End-of-turn token texts that stop generation when the vocabulary has them as special tokens.
const END_OF_TURN: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
];

/// How text becomes ids.
enum Encoder {
    /// A `tokenizers` pipeline (gguf-bpe, hf-json).
    Hf(Box<tokenizers::Tokenizer>),
    /// Scored SentencePiece-style merges (gguf-spm).
    Spm(Box<spm::SpmModel>),
}

/// A tokenizer with its special-token metadata and chat template. `Send + Sync`; share it
/// with `Arc`.
pub struct Tokenizer {
    kind: &'static str,
    encoder: Encoder,
    pieces: StrTable,
    bytes: ByteTable,
    flags: Vec<u8>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    stop_ids: Vec<u32>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("stop_ids", &self.stop_ids)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Build from GGUF metadata (tokenizer.ggml.model gpt2 → byte-level BPE; llama →
    /// SentencePiece-style BPE by scores with byte fallback `<0xXX>`, `▁` as space, honouring
    /// tokenizer.ggml.add_space_prefix).
    pub fn from_gguf(content: &candle_core::quantized::gguf_file::Content) -> Result<Tokenizer> {
        gguf::from_gguf(content)
    }

    /// Build from a model directory: `tokenizer.json` (required) plus `tokenizer_config.json`,
    /// `config.json` and `generation_config.json` for bos/eos ids, `add_bos_token` and the chat
    /// template (`chat_template.jinja` wins over `tokenizer_config.json`'s).
    pub fn from_dir(dir: &std::path::Path) -> Result<Tokenizer> {
        hf::from_dir(dir)
    }

    /// Encode text; special tokens written in the text are parsed (e.g. `<|im_start|>`). With
    /// `add_special`, BOS is prepended when the model wants it.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        match &self.encoder {
            Encoder::Hf(tok) => {
                let enc = tok
                    .encode_fast(text, false)
                    .map_err(|e| anyhow::anyhow!("tokenizing {} bytes of text: {e}", text.len()))?;
                ids.extend_from_slice(enc.get_ids());
            }
            Encoder::Spm(model) => model.encode(text, &mut ids),
        }
        Ok(ids)
    }

    /// Decode ids to text; invalid UTF-8 becomes U+FFFD. `skip_special` drops control tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut buf = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if !(skip_special && self.is_special(id)) {
                buf.extend_from_slice(self.token_bytes(id));
            }
        }
        match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Raw bytes of one token's text (byte-level pieces mapped back through the GPT-2 byte
    /// table; SentencePiece `▁` → space, `<0xXX>` → that byte; special tokens: their literal
    /// text). Empty for an unknown id.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).unwrap_or(&[])
    }

    /// The vocabulary string of one token, as stored in the model.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize)
    }

    /// Number of token ids (highest id + 1).
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The BOS id, if the model has one (whether or not it is prepended).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS id, if the model names one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `encode(.., true)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Ids that end generation: EOS, the model's end-of-turn/end-of-message ids, and the
    /// usual end-of-turn special tokens present in the vocabulary.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Whether `id` is a control/special token.
    pub fn is_special(&self, id: u32) -> bool {
        self.flags
            .get(id as usize)
            .is_some_and(|f| f & FLAG_SPECIAL != 0)
    }

    /// Text of the EOS token, for chat templates.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos.and_then(|id| self.piece(id))
    }

    /// Text of the BOS token, for chat templates.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.and_then(|id| self.piece(id))
    }

    /// The chat template source (GGUF `tokenizer.chat_template` or the model directory's), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Serialize as a Hugging Face `tokenizer.json` (byte-level BPE and hf-json kinds; the
    /// SentencePiece kind returns an error), loadable again with [`Tokenizer::from_dir`].
    pub fn to_tokenizer_json(&self) -> Result<String> {
        match &self.encoder {
            Encoder::Hf(tok) => tok
                .to_string(false)
                .map_err(|e| anyhow::anyhow!("serializing tokenizer.json: {e}")),
            Encoder::Spm(_) => anyhow::bail!(
                "to_tokenizer_json: a SentencePiece-style GGUF tokenizer (gguf-spm) cannot be \
                 exported as tokenizer.json"
            ),
        }
    }

    /// A `tokenizer_config.json` with bos/eos tokens, `add_bos_token` and the chat template,
    /// to write beside [`Tokenizer::to_tokenizer_json`]'s output.
    pub fn to_tokenizer_config_json(&self) -> String {
        let mut cfg = serde_json::Map::new();
        cfg.insert("add_bos_token".into(), self.add_bos.into());
        cfg.insert("add_eos_token".into(), false.into());
        if let Some(b) = self.bos_token() {
            cfg.insert("bos_token".into(), b.into());
        }
        if let Some(e) = self.eos_token() {
            cfg.insert("eos_token".into(), e.into());
        }
        if let Some(t) = &self.chat_template {
            cfg.insert("chat_template".into(), t.as_str().into());
        }
        serde_json::to_string_pretty(&serde_json::Value::Object(cfg))
            .expect("JSON object serializes")
    }

    /// Short kind name for /health: "gguf-bpe", "gguf-spm" or "hf-json".
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Id of a literally matched (special, user-defined or added) token with this text.
    fn literal_id(&self, text: &str) -> Option<u32> {
        let id = match &self.encoder {
            Encoder::Hf(tok) => tok.token_to_id(text)?,
            Encoder::Spm(model) => model.token_id(text)?,
        };
        let literal = self
            .flags
            .get(id as usize)
            .is_some_and(|f| f & FLAG_LITERAL != 0);
        literal.then_some(id)
    }

    /// Fill `stop_ids`: EOS, then `extra` (the model's own end ids), then end-of-turn tokens.
    fn set_stop_ids(&mut self, extra: &[u32]) {
        let mut stops: Vec<u32> = Vec::new();
        let named: Vec<u32> = END_OF_TURN
            .iter()
            .filter_map(|t| self.literal_id(t))
            .collect();
        let all = self.eos.iter().chain(extra).chain(&named);
        for &id in all {
            if (id as usize) < self.vocab_size() && !stops.contains(&id) {
                stops.push(id);
            }
        }
        self.stop_ids = stops;
    }
}

#[cfg(test)]
mod tests;
