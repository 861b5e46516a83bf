//! Fast loader tests on a tiny random-weight llama written by the test itself (safetensors +
//! config.json + a byte-level tokenizer.json): no download, runs in milliseconds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use llorch_engine::EngineEvent;
use llorch_engine::{load, Engine, Job, LoadOptions};
use llorch_wire::{SamplingParams, StopReason};

const HIDDEN: usize = 64;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FF: usize = 128;
const VOCAB: usize = 258; // 256 byte tokens + <|im_start|> + <|im_end|>

/// GPT-2's byte → printable char table.
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        table[*b as usize] = char::from_u32(c).unwrap();
    }
    table
}

/// Deterministic pseudo-random weights in [-scale, scale].
fn weights(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    llorch_engine::tiny::uniform(shape, seed, scale).unwrap()
}

fn write_tiny_llama(dir: &Path) {
    write_tiny_llama_ctx(dir, 256);
}

/// The tiny llama with a trained context of `ctx` tokens.
fn write_tiny_llama_ctx(dir: &Path, ctx: usize) {
    let hd = HIDDEN / HEADS;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut seed = 1;
    let mut put = |name: String, shape: &[usize], scale: f32| {
        seed += 1;
        t.insert(name, weights(shape, seed, scale));
    };
    put("model.embed_tokens.weight".into(), &[VOCAB, HIDDEN], 1.0);
    put("lm_head.weight".into(), &[VOCAB, HIDDEN], 0.3);
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        put(
            format!("{p}.self_attn.q_proj.weight"),
            &[HEADS * hd, HIDDEN],
            0.2,
        );
        put(
            format!("{p}.self_attn.k_proj.weight"),
            &[KV_HEADS * hd, HIDDEN],
            0.2,
        );
        put(
            format!("{p}.self_attn.v_proj.weight"),
            &[KV_HEADS * hd, HIDDEN],
            0.2,
        );
        put(
            format!("{p}.self_attn.o_proj.weight"),
            &[HIDDEN, HEADS * hd],
            0.2,
        );
        put(format!("{p}.mlp.gate_proj.weight"), &[FF, HIDDEN], 0.2);
        put(format!("{p}.mlp.up_proj.weight"), &[FF, HIDDEN], 0.2);
        put(format!("{p}.mlp.down_proj.weight"), &[HIDDEN, FF], 0.2);
        put(format!("{p}.input_layernorm.weight"), &[HIDDEN], 1.0);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[HIDDEN],
            1.0,
        );
    }
    put("model.norm.weight".into(), &[HIDDEN], 1.0);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": FF, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": ctx,
        "bos_token_id": 256, "eos_token_id": 257,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let chars = byte_chars();
    let vocab: serde_json::Map<String, serde_json::Value> = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), serde_json::json!(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 256, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 257, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let tcfg = serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": false});
    std::fs::write(dir.join("tokenizer_config.json"), tcfg.to_string()).unwrap();
}

fn job(id: &str, prompt: Vec<u32>, max_tokens: u32, sampling: SamplingParams) -> Job {
    Job::new(id, prompt, max_tokens, sampling)
}

/// Run one job on an engine thread and collect its events.
fn run(engine: &Engine, j: Job) -> Vec<EngineEvent> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let ev = events.clone();
    engine
        .submit(
            j,
            Box::new(move |e: EngineEvent| {
                let terminal = e.is_terminal();
                ev.lock().unwrap().push(e);
                if terminal {
                    let _ = tx.send(());
                }
                true
            }),
        )
        .unwrap();
    rx.recv().unwrap();
    let v = events.lock().unwrap().clone();
    v
}

#[test]
fn tiny_random_llama_loads_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path());
    let lm = load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(lm.info.format, "safetensors");
    assert_eq!(lm.info.architecture, "llama");
    assert_eq!(lm.info.vocab_size, VOCAB);
    assert_eq!(lm.info.context_length, 256);
    let prompt = lm.tokenizer.encode("hello", true).unwrap();
    // no merges: one token per byte, token id = byte value
    assert_eq!(
        prompt,
        b"hello".iter().map(|&b| b as u32).collect::<Vec<_>>()
    );
    // no waiting room: each job is submitted the moment the previous one's `end` arrives, and
    // must still be admitted (the slot is freed before the terminal event goes out)
    let engine = Engine::start(Arc::new(lm), 0, 1);
    let a = run(
        &engine,
        job("a", prompt.clone(), 12, SamplingParams::greedy()),
    );
    let b = run(
        &engine,
        job("b", prompt.clone(), 12, SamplingParams::greedy()),
    );
    let ids = |evs: &[EngineEvent]| -> Vec<u32> {
        evs.iter()
            .filter_map(|e| {
                if let EngineEvent::Token { id, .. } = e {
                    Some(*id)
                } else {
                    None
                }
            })
            .collect()
    };
    assert!(matches!(a[0], EngineEvent::Started { tokens_in: 5, .. }));
    assert_eq!(
        ids(&a),
        ids(&b),
        "a fresh KV cache per request: same prompt, same greedy tokens"
    );
    assert_eq!(a.iter().filter(|e| e.is_terminal()).count(), 1);
    match a.last().unwrap() {
        EngineEvent::End {
            stop_reason,
            tokens_out,
            ..
        } => {
            assert!(matches!(
                stop_reason,
                StopReason::MaxTokens | StopReason::Eos
            ));
            assert_eq!(*tokens_out as usize, ids(&a).len());
        }
        e => panic!("unexpected terminal {e:?}"),
    }
    // decode positions are absolute: prefilling prompt+generated in one pass predicts the same
    // next token as the incremental decode did
    let gen = ids(&a);
    if gen.len() >= 2 {
        let mut longer = prompt.clone();
        longer.extend_from_slice(&gen[..gen.len() - 1]);
        let c = run(&engine, job("c", longer, 1, SamplingParams::greedy()));
        assert_eq!(ids(&c), vec![*gen.last().unwrap()]);
    }
}

#[test]
fn loader_errors_name_the_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path());
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = format!(
        "{:#}",
        load(dir.path(), &LoadOptions::default())
            .err()
            .expect("fails")
    );
    assert!(err.contains("tokenizer.json"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path());
    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"mamba"}"#).unwrap();
    let err = format!(
        "{:#}",
        load(dir.path(), &LoadOptions::default())
            .err()
            .expect("fails")
    );
    assert!(
        err.contains("config.json") && err.contains("unsupported model_type `mamba`"),
        "{err}"
    );
}

/// The batching check on the tiny model: jobs batched with each other (seeded and greedy, some
/// waiting for a slot) generate exactly what they generate alone; scheduling is covered by CI
/// in seconds, without a download.
#[test]
fn batched_jobs_generate_what_they_generate_alone_on_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama_ctx(dir.path(), 1024);
    let lm = Arc::new(load(dir.path(), &LoadOptions::default()).unwrap());
    const PROMPTS: [crate::batching::Prompt; 6] = [
        ("The quick brown fox", 200, None),
        ("Once upon a time, in a small village,", 300, None),
        ("1, 2, 3, 4, 5,", 60, Some(3)),
        ("The capital of France is", 250, Some(7)),
        ("def fibonacci(n):", 120, None),
        ("Water boils at", 20, Some(11)),
    ];
    crate::batching::check_batched_jobs_match_solo(lm, &PROMPTS, 2);
}
