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

/// A random GGUF metadata value of any type (huge and negative numbers, NaN, nested arrays).
fn random_value(rng: &mut llorch_testkit::FuzzRng, depth: u32) -> Value {
    match rng.below(if depth == 0 { 9 } else { 10 }) {
        0 => Value::U8(rng.next_u64() as u8),
        1 => Value::I32(*rng.pick(&[-1, 0, 1, i32::MAX, i32::MIN])),
        2 => Value::U32(*rng.pick(&[0, 1, 2, 300, u32::MAX])),
        3 => Value::U64(*rng.pick(&[0, 5, u64::MAX, 1 << 40])),
        4 => Value::I64(*rng.pick(&[-5, i64::MIN, i64::MAX])),
        5 => Value::F32(*rng.pick(&[f32::NAN, f32::INFINITY, -1.0, 0.5])),
        6 => Value::Bool(rng.below(2) == 1),
        7 => Value::String((*rng.pick(&["", "gpt2", "llama", "a b", "<0xZZ>", "\u{0}"])).into()),
        8 => Value::Array(Vec::new()),
        _ => Value::Array(
            (0..rng.below(40))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
    }
}

/// Fuzz-style (bounded: 1500 seeded cases): tokenizer metadata as a damaged or hostile GGUF
/// could carry it (values of the wrong type, arrays of mismatched lengths, out-of-range and
/// huge ids, garbage merges and byte pieces, unknown models and pre-tokenizers) gives a
/// tokenizer or an error, never a panic; a tokenizer that loads encodes and decodes random
/// text without panicking.
#[test]
fn random_tokenizer_metadata_never_panics() {
    let mut rng = llorch_testkit::FuzzRng::new(31);
    let pieces = [
        "a",
        "b",
        "ab",
        "\u{120}",
        "\u{120}ab",
        "<s>",
        "</s>",
        "<unk>",
        "<0x41>",
        "<0xZZ>",
        "\u{2581}",
        "",
        "<|im_end|>",
        "🙂",
        "\n\n",
    ];
    let texts = [
        "",
        "ab ab",
        "Hello",
        "🙂 <|im_end|>",
        "\u{0}\n\n",
        "<s>a</s>",
    ];
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..1500 {
        let n = rng.below(300);
        let tokens: Vec<String> = (0..n).map(|_| (*rng.pick(&pieces)).to_string()).collect();
        let merges: Vec<String> = (0..rng.below(20))
            .map(|_| format!("{} {}", rng.pick(&pieces), rng.pick(&pieces)))
            .collect();
        let types: Vec<Value> = (0..n + rng.below(3))
            .map(|_| Value::I32(*rng.pick(&[1, 2, 3, 4, 6, 0, -1, 99])))
            .collect();
        let scores: Vec<Value> = (0..n.saturating_sub(rng.below(2)))
            .map(|_| Value::F32(*rng.pick(&[0.0, -1.0, f32::NAN])))
            .collect();
        let model = *rng.pick(&["gpt2", "llama", "gpt2", "llama", "bert", ""]);
        let pre = *rng.pick(&["smollm", "llama-bpe", "qwen2", "gpt2", "default", "???"]);
        let id = |rng: &mut llorch_testkit::FuzzRng| {
            Value::U32(*rng.pick(&[0, 1, 2, n as u32, u32::MAX]))
        };
        let mut meta: Vec<(&str, Value)> = vec![
            ("tokenizer.ggml.model", Value::String(model.into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.merges", strings(&merges)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.scores", Value::Array(scores)),
            ("tokenizer.ggml.bos_token_id", id(&mut rng)),
            ("tokenizer.ggml.eos_token_id", id(&mut rng)),
            ("tokenizer.ggml.eot_token_id", id(&mut rng)),
            ("tokenizer.ggml.unknown_token_id", id(&mut rng)),
            (
                "tokenizer.ggml.add_bos_token",
                Value::Bool(rng.below(2) == 1),
            ),
            (
                "tokenizer.ggml.add_space_prefix",
                Value::Bool(rng.below(2) == 1),
            ),
            ("tokenizer.chat_template", Value::String("{{ x }".into())),
        ];
        // Some keys get a value of a random type, some go missing.
        for (_, v) in meta.iter_mut() {
            if rng.below(8) == 0 {
                *v = random_value(&mut rng, 2);
            }
        }
        if rng.below(6) == 0 {
            meta.remove(rng.below(meta.len()));
        }
        match Tokenizer::from_gguf(&content(meta)) {
            Ok(tok) => {
                loaded += 1;
                for _ in 0..3 {
                    let text = *rng.pick(&texts);
                    let ids = tok.encode(text, rng.below(2) == 1).unwrap_or_default();
                    let _ = tok.decode(&ids, rng.below(2) == 1);
                    let stray: Vec<u32> = (0..4).map(|_| rng.next_u64() as u32).collect();
                    let _ = tok.decode(&stray, false);
                }
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty(), "case {case}");
            }
        }
    }
    eprintln!("random_tokenizer_metadata_never_panics: {loaded} loaded, {refused} refused");
    assert!(
        loaded > 0 && refused > 0,
        "{loaded} loaded, {refused} refused"
    );
}
