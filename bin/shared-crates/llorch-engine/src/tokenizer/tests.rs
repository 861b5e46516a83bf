//! Model-free tests of the whole tokenizer on tiny hand-made GGUF vocabularies.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};

use super::{StreamDecoder, Tokenizer};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn tokenizer_and_chat_template_are_send_sync() {
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<crate::chat::ChatTemplate>();
}

fn content(meta: Vec<(&str, Value)>) -> Content {
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    }
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

/// SentencePiece-style: <unk> <s> </s> <|user|>(control) "\n\n"(user-defined), 256 byte
/// pieces, then scored pieces.
fn tiny_spm(extra: Vec<(&str, Value)>) -> Tokenizer {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>", "<|user|>", "\n\n"]
        .map(String::from)
        .to_vec();
    let mut types = vec![2, 3, 3, 3, 4];
    let mut scores = vec![0.0f32; 5];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (i, p) in [
        "\u{2581}",
        "H",
        "e",
        "l",
        "o",
        "ll",
        "He",
        "llo",
        "Hello",
        "\u{2581}Hello",
    ]
    .iter()
    .enumerate()
    {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(-(i as f32));
    }
    let mut meta = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ];
    meta.extend(extra);
    Tokenizer::from_gguf(&content(meta)).unwrap()
}

const SPM_HELLO: u32 = 5 + 256 + 9; // "▁Hello"
const SPM_BYTE: u32 = 5; // "<0x00>"

#[test]
fn spm_gguf_defaults_add_bos_and_space_prefix() {
    let tok = tiny_spm(vec![]);
    assert_eq!(tok.kind(), "gguf-spm");
    assert_eq!(tok.encode("Hello", true).unwrap(), [1, SPM_HELLO]);
    assert_eq!(
        tok.encode("<|user|>Hello\n\n", false).unwrap(),
        [3, SPM_HELLO, 4]
    );
    assert_eq!(tok.decode(&[1, SPM_HELLO, 2], true), " Hello");
    assert_eq!(tok.decode(&[1, SPM_HELLO, 2], false), "<s> Hello</s>");
    assert_eq!(tok.stop_ids(), [2]);
    assert!(tok.to_tokenizer_json().is_err());
    // An unknown character becomes its UTF-8 bytes.
    let e_acute = [SPM_BYTE + 0xC3, SPM_BYTE + 0xA9];
    assert_eq!(
        tok.encode("\u{e9}", false).unwrap(),
        [SPM_HELLO - 9, e_acute[0], e_acute[1]]
    );
}

#[test]
fn spm_gguf_honours_flags() {
    let tok = tiny_spm(vec![
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
    ]);
    assert_eq!(tok.encode("Hello", true).unwrap(), [5 + 256 + 8]);
    assert_eq!(tok.encode(" Hello", true).unwrap(), [SPM_HELLO]);
}

#[test]
fn stream_decoder_holds_back_incomplete_characters() {
    let tok = tiny_spm(vec![]);
    let mut dec = StreamDecoder::new(&tok, true);
    assert_eq!(dec.push(1), ""); // <s> skipped
    assert_eq!(dec.push(SPM_HELLO), " Hello");
    // 🙂 = F0 9F 99 82, one byte token at a time.
    let smile: Vec<u32> = "\u{1F642}".bytes().map(|b| SPM_BYTE + b as u32).collect();
    assert_eq!(dec.push(smile[0]), "");
    assert_eq!(dec.push(smile[1]), "");
    assert_eq!(dec.push(smile[2]), "");
    assert!(dec.has_pending());
    assert_eq!(dec.push(smile[3]), "\u{1F642}");
    assert_eq!(dec.finish(), "");
}

#[test]
fn stream_decoder_matches_decode_on_invalid_bytes() {
    let tok = tiny_spm(vec![]);
    let b = |x: u8| SPM_BYTE + x as u32;
    let seqs: Vec<Vec<u32>> = vec![
        vec![b(0xFF), SPM_HELLO],
        vec![b(0xC3), SPM_HELLO],
        vec![b(0xE6), b(0x9D), SPM_HELLO, b(0xE6)],
        vec![b(0xF0), b(0x9F), b(0x99)],
        vec![b(0xED), b(0xA0), b(0x80)],
        vec![SPM_HELLO, b(0xC3), b(0xA9), b(0x80)],
    ];
    for ids in seqs {
        let mut dec = StreamDecoder::new(&tok, false);
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&dec.push(id));
        }
        out.push_str(&dec.finish());
        assert_eq!(out, tok.decode(&ids, false), "{ids:?}");
    }
    // cut off by max_tokens inside a character: its bytes are dropped, not sent as U+FFFD
    let mut dec = StreamDecoder::new(&tok, false);
    let mut out = dec.push(SPM_HELLO);
    out.push_str(&dec.push(b(0xE6)));
    out.push_str(&dec.push(b(0x9D)));
    assert!(dec.has_pending());
    out.push_str(&dec.cut());
    assert_eq!(out, tok.decode(&[SPM_HELLO], false));
    assert!(!dec.has_pending());
}

/// Byte-level BPE: bytes a, b, space (Ġ), "1", "2", merges a+b, Ġ+ab, 1+2 and a bad merge.
fn tiny_bpe(pre: &str) -> Tokenizer {
    let tokens: Vec<String> = [
        "<|end|>",
        "a",
        "b",
        "\u{120}",
        "1",
        "2",
        "ab",
        "\u{120}ab",
        "12",
        "<|im_end|>",
    ]
    .map(String::from)
    .to_vec();
    let merges: Vec<String> = ["a b", "\u{120} ab", "1 2", "x y"]
        .map(String::from)
        .to_vec();
    Tokenizer::from_gguf(&content(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&merges)),
        (
            "tokenizer.ggml.token_type",
            Value::Array([3, 1, 1, 1, 1, 1, 1, 1, 1, 3].map(Value::I32).to_vec()),
        ),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
        ("tokenizer.ggml.eot_token_id", Value::U32(9)),
        (
            "tokenizer.chat_template",
            Value::String("{{ messages }}".into()),
        ),
    ]))
    .unwrap()
}

#[test]
fn bpe_gguf_pre_tokenizers() {
    let tok = tiny_bpe("smollm");
    assert_eq!(tok.kind(), "gguf-bpe");
    assert_eq!(
        tok.encode("ab ab<|end|>", true).unwrap(),
        [6, 7, 0],
        "no BOS for gpt2 by default"
    );
    assert_eq!(
        tok.encode("12", false).unwrap(),
        [4, 5],
        "smollm splits digits"
    );
    assert_eq!(tiny_bpe("gpt2").encode("12", false).unwrap(), [8]);
    assert_eq!(
        tiny_bpe("llama-bpe").encode("12 ab", false).unwrap(),
        [8, 7]
    );
    assert_eq!(tiny_bpe("qwen2").encode("12", false).unwrap(), [4, 5]);
    assert_eq!(tok.token_bytes(7), b" ab");
    assert_eq!(tok.decode(&[7, 0, 6], true), " abab");
    assert_eq!(tok.stop_ids(), [0, 9]);
    assert_eq!(tok.eos_token(), Some("<|end|>"));
    assert_eq!(tok.bos_id(), None);
}

#[test]
fn bpe_gguf_exports_tokenizer_json() {
    let tok = tiny_bpe("smollm");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        tok.to_tokenizer_json().unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        tok.to_tokenizer_config_json(),
    )
    .unwrap();
    let back = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(back.kind(), "hf-json");
    assert_eq!(
        back.encode("ab ab<|end|>12", true).unwrap(),
        [6, 7, 0, 4, 5]
    );
    assert_eq!(back.stop_ids(), [0, 9]);
    assert_eq!(back.chat_template(), Some("{{ messages }}"));
    assert_eq!(back.token_bytes(7), b" ab");
}

#[test]
fn gguf_errors_are_clear() {
    let err = Tokenizer::from_gguf(&content(vec![]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.ggml.model"), "{err}");
    let err = Tokenizer::from_gguf(&content(vec![
        ("tokenizer.ggml.model", Value::String("bert".into())),
        ("tokenizer.ggml.tokens", strings(&["a".to_string()])),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("\"bert\" is not supported"), "{err}");
}
