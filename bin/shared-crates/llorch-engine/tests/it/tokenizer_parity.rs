//! Tokenizer and chat-template parity with llama.cpp on the real SmolLM2 GGUF
//! (`fixtures/smollm2-greedy.json`), plus the SentencePiece path on Gemma 3's GGUF.
//!
//! Each test skips locally (fails under CI=true) when its model is not cached; fetch with
//! `scripts/fetch-test-model.sh smollm2|gemma3`.

use std::path::Path;
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use llorch_engine::chat::ChatTemplate;
use llorch_engine::tokenizer::{StreamDecoder, Tokenizer};
use llorch_wire::ChatMessage;
use serde_json::Value;

fn read_gguf(path: &Path) -> Content {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Content::read(&mut f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn smollm2(test: &str) -> Option<Tokenizer> {
    let path = llorch_testkit::require_smollm2(test)?;
    Some(Tokenizer::from_gguf(&read_gguf(&path)).expect("SmolLM2 tokenizer builds"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn cases() -> Vec<Value> {
    llorch_testkit::smollm2_fixture()["cases"]
        .as_array()
        .expect("cases")
        .clone()
}

fn name(case: &Value) -> &str {
    case["name"].as_str().unwrap_or("?")
}

#[test]
fn smollm2_encode_matches_llama_cpp() {
    let Some(tok) = smollm2("smollm2_encode_matches_llama_cpp") else {
        return;
    };
    assert_eq!(tok.kind(), "gguf-bpe");
    for case in cases() {
        let got = tok.encode(case["text"].as_str().unwrap(), true).unwrap();
        assert_eq!(got, ids(&case["prompt_ids"]), "case {}", name(&case));
    }
}

#[test]
fn smollm2_special_tokens_and_metadata() {
    let Some(tok) = smollm2("smollm2_special_tokens_and_metadata") else {
        return;
    };
    assert_eq!(tok.vocab_size(), 49152);
    // No prefix space after a special token: "user" is 4093, not " user" (2914).
    assert_eq!(tok.encode("<|im_start|>user", true).unwrap(), [1, 4093]);
    assert_eq!(tok.token_bytes(2914), b" user");
    assert_eq!(tok.token_bytes(1), b"<|im_start|>");
    assert_eq!(tok.piece(2914), Some("\u{120}user"));
    assert!(tok.is_special(2) && !tok.is_special(4093));
    assert_eq!(
        (tok.bos_id(), tok.bos_token(), tok.eos_token()),
        (Some(1), Some("<|im_start|>"), Some("<|im_end|>"))
    );
    assert_eq!(tok.stop_ids()[0], 2, "eos first");
    assert!(
        tok.stop_ids().contains(&0),
        "<|endoftext|> stops too: {:?}",
        tok.stop_ids()
    );
    // Digits split one by one.
    assert_eq!(tok.encode("2024", false).unwrap().len(), 4);
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap();
    assert_eq!(tok.decode(&ids, false), "<|im_start|>user\nHi<|im_end|>");
    assert_eq!(tok.decode(&ids, true), "user\nHi");
    assert!(tok.chat_template().is_some());
}

#[test]
fn smollm2_chat_template_matches_llama_cpp() {
    let Some(tok) = smollm2("smollm2_chat_template_matches_llama_cpp") else {
        return;
    };
    let tmpl = ChatTemplate::new(
        tok.chat_template().unwrap(),
        tok.bos_token(),
        tok.eos_token(),
    )
    .unwrap();
    let mut n = 0;
    for case in cases().iter().filter(|c| c.get("messages").is_some()) {
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        assert_eq!(
            tmpl.render(&messages, true).unwrap(),
            case["text"].as_str().unwrap(),
            "case {}",
            name(case)
        );
        n += 1;
    }
    assert!(n >= 3, "fixture has chat cases");
}

#[test]
fn smollm2_decode_and_stream_match_greedy_text() {
    let Some(tok) = smollm2("smollm2_decode_and_stream_match_greedy_text") else {
        return;
    };
    for case in cases() {
        let greedy = ids(&case["greedy_ids"]);
        let want = case["greedy_text"].as_str().unwrap();
        assert_eq!(tok.decode(&greedy, true), want, "case {}", name(&case));
        let mut dec = StreamDecoder::new(&tok, true);
        let mut text = String::new();
        for &id in &greedy {
            let piece = dec.push(id);
            assert!(
                !piece.contains('\u{FFFD}'),
                "case {}: U+FFFD streamed",
                name(&case)
            );
            text.push_str(&piece);
        }
        text.push_str(&dec.finish());
        assert_eq!(text, want, "case {}", name(&case));
    }
}

#[test]
fn smollm2_stream_decoder_keeps_multibyte_chars_whole() {
    let Some(tok) = smollm2("smollm2_stream_decoder_keeps_multibyte_chars_whole") else {
        return;
    };
    let case = cases()
        .into_iter()
        .find(|c| name(c) == "raw-unicode")
        .expect("raw-unicode case");
    let text = case["text"].as_str().unwrap();
    let prompt = ids(&case["prompt_ids"]);
    // Some characters (🙂, 東京) are split across tokens that are not valid UTF-8 alone.
    let partial = |id: u32| std::str::from_utf8(tok.token_bytes(id)).is_err();
    let first_partial = prompt
        .iter()
        .position(|&id| partial(id))
        .expect("a token holding part of a character");
    let mut dec = StreamDecoder::new(&tok, false);
    let mut out = Vec::new();
    for &id in &prompt {
        let s = dec.push(id);
        assert!(
            !s.contains('\u{FFFD}'),
            "split character streamed after token {id}: {s:?}"
        );
        out.push(s);
    }
    assert!(!dec.has_pending());
    assert_eq!(dec.finish(), "");
    assert_eq!(out.concat(), text);
    assert!(
        out.iter().any(|s| s.contains('\u{1F642}')),
        "the emoji arrives whole in one piece"
    );
    // An incomplete character at the end is flushed lossily, exactly as decode does.
    let cut = &prompt[..=first_partial];
    let mut dec = StreamDecoder::new(&tok, false);
    let streamed: String = cut.iter().map(|&id| dec.push(id)).collect::<String>() + &dec.finish();
    assert_eq!(streamed, tok.decode(cut, false));
    assert!(streamed.ends_with('\u{FFFD}'));
}

#[test]
fn smollm2_tokenizer_json_round_trip() {
    let Some(tok) = smollm2("smollm2_tokenizer_json_round_trip") else {
        return;
    };
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
    assert_eq!(back.vocab_size(), tok.vocab_size());
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            back.encode(text, true).unwrap(),
            ids(&case["prompt_ids"]),
            "case {}",
            name(&case)
        );
        let greedy = ids(&case["greedy_ids"]);
        assert_eq!(
            back.decode(&greedy, true),
            case["greedy_text"].as_str().unwrap()
        );
    }
    assert_eq!(back.stop_ids(), tok.stop_ids());
    assert_eq!(
        (back.bos_id(), back.eos_token()),
        (tok.bos_id(), tok.eos_token())
    );
    assert_eq!(back.chat_template(), tok.chat_template());
    for id in [0u32, 1, 2, 198, 2914, 49151] {
        assert_eq!(back.token_bytes(id), tok.token_bytes(id), "token {id}");
        assert_eq!(back.is_special(id), tok.is_special(id), "token {id}");
    }
    // tokenizer.json alone: still loads; no chat template, no BOS added.
    let bare = tempfile::tempdir().unwrap();
    std::fs::write(
        bare.path().join("tokenizer.json"),
        tok.to_tokenizer_json().unwrap(),
    )
    .unwrap();
    let bare = Tokenizer::from_dir(bare.path()).unwrap();
    assert_eq!(bare.encode("<|im_start|>user", true).unwrap(), [1, 4093]);
    assert_eq!(bare.chat_template(), None);
}

#[test]
fn from_dir_without_tokenizer_json_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn smollm2_tokenizer_builds_fast() {
    let Some(path) = llorch_testkit::require_smollm2("smollm2_tokenizer_builds_fast") else {
        return;
    };
    let content = read_gguf(&path);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        let tok = Tokenizer::from_gguf(&content).unwrap();
        best = best.min(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(tok.vocab_size(), 49152);
    }
    eprintln!("SmolLM2 tokenizer construction: {best:.1} ms (best of 3)");
    // Generous bound for a shared, busy machine; typical is far lower (see the report above).
    assert!(best < 1000.0, "tokenizer construction took {best:.1} ms");
}

/// Gemma 3 ids for text without special tokens, from Google's SentencePiece library (0.2) run on a
/// model proto built from this GGUF's pieces, scores and types (byte fallback, no dummy prefix).
const GEMMA3_REFERENCE: &[(&str, &[u32])] = &[
    ("Hello world", &[9259, 1902]),
    (
        "The quick brown fox jumps over the lazy dog.",
        &[
            818, 3823, 8864, 37423, 38167, 1024, 506, 31770, 4799, 236761,
        ],
    ),
    (
        "Café, naïve, 東京 and 🙂 are words that",
        &[
            160319, 236859, 236764, 120362, 236764, 86459, 532, 57235, 659, 4171, 600,
        ],
    ),
    (
        "  two leading spaces\n\nand a blank line",
        &[138, 13498, 5830, 9952, 108, 624, 496, 11580, 1757],
    ),
    (
        "def f(x):\n    return x**2 + 1",
        &[
            2063, 517, 236769, 236781, 1473, 107, 140, 2060, 1123, 1018, 236778, 900, 236743,
            236770,
        ],
    ),
    (
        "Numbers: 12345 and 3.14159",
        &[
            37091, 236787, 236743, 236770, 236778, 236800, 236812, 236810, 532, 236743, 236800,
            236761, 236770, 236812, 236770, 236810, 236819,
        ],
    ),
    (
        "ẞ𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u{0} tab\there",
        &[
            240589, 478, 395, 386, 390, 478, 395, 386, 409, 254865, 478, 395, 386, 398, 255458,
            478, 395, 386, 399, 478, 395, 386, 400, 236743, 238, 6937, 255968, 8472,
        ],
    ),
    (
        "user\nWhat is the capital of France?",
        &[2364, 107, 3689, 563, 506, 5279, 529, 7001, 236881],
    ),
    (
        "a  b   c    d",
        &[236746, 138, 236763, 139, 236755, 140, 236753],
    ),
    (
        "Ünïcödé wörds – “quotes” … ellipsis",
        &[
            238194, 236749, 238527, 236755, 55515, 236859, 515, 4010, 5338, 1271, 999, 52231,
            236919, 7881, 212696,
        ],
    ),
];

#[test]
fn gemma3_spm_matches_sentencepiece() {
    let Some(path) = llorch_testkit::require_model(
        "gemma3_spm_matches_sentencepiece",
        llorch_testkit::GEMMA3_FILE,
    ) else {
        return;
    };
    let content = read_gguf(&path);
    let t0 = Instant::now();
    let tok = Tokenizer::from_gguf(&content).unwrap();
    eprintln!(
        "Gemma 3 tokenizer construction: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(tok.kind(), "gguf-spm");
    assert_eq!(tok.vocab_size(), 262144);
    for (text, want) in GEMMA3_REFERENCE {
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, *want, "{text:?}");
        assert_eq!(tok.decode(&got, false), *text, "round trip {text:?}");
        let mut dec = StreamDecoder::new(&tok, false);
        let streamed: String =
            got.iter().map(|&id| dec.push(id)).collect::<String>() + &dec.finish();
        assert_eq!(streamed, *text);
    }
    // BOS is added; control tokens in the text are parsed; end of turn stops generation.
    let ids = tok
        .encode("<start_of_turn>user\nHello world<end_of_turn>\n", true)
        .unwrap();
    assert_eq!(ids, [2, 105, 2364, 107, 9259, 1902, 106, 107]);
    assert_eq!(tok.decode(&ids, true), "user\nHello world\n");
    assert_eq!(
        (tok.bos_token(), tok.eos_token()),
        (Some("<bos>"), Some("<eos>"))
    );
    assert!(
        tok.stop_ids().contains(&1) && tok.stop_ids().contains(&106),
        "{:?}",
        tok.stop_ids()
    );
    assert_eq!(tok.token_bytes(248), b"\n"); // <0x0A>
    assert_eq!(tok.token_bytes(1001), b" di"); // ▁di
    assert!(tok.to_tokenizer_json().is_err());
}
