//! llorch-bench: engine and worker benchmarks on a real model, release builds.
//!
//! Prints prompt-processing (ppN) and generation (tgN) tokens/s, min and median over rounds,
//! and — with `--worker` — cold start (exec → ready), peak RSS, TTFT and cancel latency of a
//! real `llorch-candled` process. For a ratio to llama.cpp, run `scripts/bench-peer.py`, which
//! runs this and `llama-bench` interleaved on the same model, threads and prompt.
//!
//! With `--batch 1,2,4,8` it also measures continuous batching: aggregate generation tokens/s
//! when that many sequences share each decode step (the worker's `--parallel`).
//!
//! With `--device cuda:N` (or `metal`) the engine benchmarks run on that GPU (a build with the
//! `cuda`/`metal` feature; `scripts/gpu-check.sh` runs pp512/tg64 and `--batch 8` there);
//! `--kernels generic` runs the GPU code path on the CPU.
//!
//! usage: llorch-bench --model PATH [--device cpu|cuda:N|metal] [--kernels native|generic]
//!        [--threads 2] [--rounds 5] [--pp 128] [--tg 128]
//!        [--weights auto|q8_0|stored] [--batch 1,2,4] [--worker] [--profile]

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use llorch_engine::generate::prefill;
use llorch_engine::model::{profile, Logits, Requant};
use llorch_engine::sampler::argmax;
use llorch_engine::{load, LoadOptions};

#[derive(Parser)]
#[command(
    about = "Benchmark the engine (pp/tg tok/s) and the worker process (cold start, RSS, TTFT, cancel)."
)]
struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 128)]
    pp: usize,
    #[arg(long, default_value_t = 128)]
    tg: usize,
    /// CPU weight handling: auto | q8_0 | stored (as the worker's --weights).
    #[arg(long, default_value = "auto")]
    weights: String,
    /// Device for the engine benchmarks: cpu, cuda:N or metal[:N] (the worker's `--backend`
    /// and `--device` in one word; GPUs need a build with that cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute path, as the worker's `--kernels`: native (CPU default) or generic (the code a
    /// GPU runs; GPU devices always run it).
    #[arg(long, default_value = "native", value_name = "native|generic")]
    kernels: llorch_engine::model::Kernels,
    /// Also benchmark a real worker process (needs llorch-candled next to this binary).
    #[arg(long)]
    worker: bool,
    /// Batch sizes for the batched-decode benchmark (aggregate tok/s of N sequences).
    #[arg(long, value_delimiter = ',')]
    batch: Vec<usize>,
    /// Constrained decoding: schema compile time, and engine tok/s with a JSON-schema
    /// constraint vs without, at each `--batch` size (default 1,4).
    #[arg(long)]
    constrained: bool,
    /// Time the forward pass by operation (matmul per weight type and shape, attention, the
    /// rest) and print where pp and tg time goes.
    #[arg(long)]
    profile: bool,
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2])
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    let (compute, index) =
        llorch_candled::cli::parse_device_spec(&args.device).map_err(anyhow::Error::msg)?;
    let opts = LoadOptions {
        device: llorch_candled::candle::device(compute, index)?,
        kernels: args.kernels,
        requant: match args.weights.as_str() {
            "q8_0" => Requant::Q8_0,
            "stored" => Requant::Off,
            _ => Requant::Auto,
        },
        ..Default::default()
    };
    let lm = load(&args.model, &opts)?;
    println!(
        "model {} ({} → {}), device {}, kernels {}, {} threads, load {:.0} ms",
        lm.info.name,
        lm.info.quantization,
        lm.info.runtime_quantization,
        args.device,
        lm.info.kernels,
        args.threads,
        lm.info.load_time_ms
    );
    let never = AtomicBool::new(false);
    let prompt: Vec<u32> = (0..args.pp as u32)
        .map(|i| 100 + (i * 37) % 40000)
        .collect();
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    let mut prof = [Vec::new(), Vec::new()];
    if args.profile {
        profile::enable();
    }
    for _ in 0..args.rounds {
        let mut cache = lm.model.new_cache(args.pp + args.tg + 1)?;
        let t = Instant::now();
        let (logits, _) = prefill(&lm, &prompt, &mut cache, None, &never)?.expect("not cancelled");
        pp.push(args.pp as f64 / t.elapsed().as_secs_f64());
        prof[0].extend(profile::take());
        let mut id = argmax(&logits);
        let mut cache = lm.model.new_cache(args.tg + 1)?;
        let t = Instant::now();
        for _ in 0..args.tg {
            let l = lm
                .model
                .forward(&[id], &mut cache, Logits::Last)?
                .squeeze(0)?
                .to_vec1::<f32>()?;
            id = argmax(&l);
        }
        tg.push(args.tg as f64 / t.elapsed().as_secs_f64());
        prof[1].extend(profile::take());
    }
    // min is the slowest round: report the median and the best
    let (pp_min, pp_med) = stats(pp.clone());
    let (tg_min, tg_med) = stats(tg.clone());
    let pp_max = pp.iter().cloned().fold(0.0, f64::max);
    let tg_max = tg.iter().cloned().fold(0.0, f64::max);
    println!(
        "pp{:<4} tok/s: min {pp_min:7.1}  median {pp_med:7.1}  max {pp_max:7.1}",
        args.pp
    );
    println!(
        "tg{:<4} tok/s: min {tg_min:7.1}  median {tg_med:7.1}  max {tg_max:7.1}",
        args.tg
    );
    if args.profile {
        print_profile(&format!("pp{}", args.pp), &prof[0], args.pp * args.rounds);
        print_profile(&format!("tg{}", args.tg), &prof[1], args.tg * args.rounds);
    }
    if args.constrained {
        let batches = if args.batch.is_empty() {
            vec![1, 4]
        } else {
            args.batch.clone()
        };
        return constrained::run(std::sync::Arc::new(lm), &batches, args.tg, args.rounds);
    }
    for &b in &args.batch {
        batched_decode(&lm, b.max(1), args.tg, args.rounds)?;
    }
    if args.worker {
        worker_bench::run(&args.model, args.threads)?;
    }
    Ok(())
}

/// Where the time of one phase went: per operation, ms per token and share of the forward pass;
/// "other" is the forward pass less the matmuls and attention (norms, rotary, residuals, copies).
fn print_profile(phase: &str, entries: &[(String, std::time::Duration, u64)], tokens: usize) {
    let mut by_op: std::collections::BTreeMap<&str, f64> = Default::default();
    for (op, d, _) in entries {
        *by_op.entry(op.as_str()).or_default() += d.as_secs_f64() * 1e3;
    }
    let total = by_op.remove("forward (whole)").unwrap_or(0.0);
    let per = |ms: f64| ms / tokens.max(1) as f64;
    println!(
        "{phase} profile: {:.3} ms/token in the forward pass",
        per(total)
    );
    let mut rows: Vec<(&str, f64)> = by_op.into_iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let counted: f64 = rows.iter().map(|r| r.1).sum();
    rows.push((
        "other: the rest (residuals, embedding, copies)",
        total - counted,
    ));
    for (op, ms) in rows {
        println!(
            "  {:<44} {:8.3} ms/token {:5.1}%",
            op,
            per(ms),
            100.0 * ms / total.max(1e-9)
        );
    }
}

/// `b` sequences with different 16-token prompts decode `tg` tokens each through
/// `forward_batch`; prints aggregate and per-sequence tokens/s (median of `rounds`).
fn batched_decode(
    lm: &llorch_engine::LoadedModel,
    b: usize,
    tg: usize,
    rounds: usize,
) -> Result<()> {
    let never = AtomicBool::new(false);
    let mut agg = Vec::new();
    for _ in 0..rounds {
        let mut caches = Vec::new();
        let mut ids = Vec::new();
        for s in 0..b as u32 {
            let prompt: Vec<u32> = (0..16u32)
                .map(|i| 100 + (i * 37 + s * 101) % 40000)
                .collect();
            let mut cache = lm.model.new_cache(16 + tg + 1)?;
            let (logits, _) =
                prefill(lm, &prompt, &mut cache, None, &never)?.expect("not cancelled");
            ids.push(argmax(&logits));
            caches.push(cache);
        }
        let t = Instant::now();
        for _ in 0..tg {
            let mut refs: Vec<_> = caches.iter_mut().collect();
            let rows = lm.model.forward_batch(&ids, &mut refs)?.to_vec2::<f32>()?;
            ids = rows.iter().map(|r| argmax(r)).collect();
        }
        agg.push((b * tg) as f64 / t.elapsed().as_secs_f64());
    }
    let (_, med) = stats(agg);
    println!(
        "tg{tg} x{b:<2} batched: {med:7.1} tok/s aggregate, {:6.1} per sequence",
        med / b as f64
    );
    Ok(())
}

mod constrained {
    //! Constrained decoding: compile time of a schema, and the engine's aggregate decode tok/s
    //! with and without a JSON-schema constraint (same prompts, greedy, `tg` tokens each: the
    //! schema asks for a long string so that neither run ends early).
    use std::sync::mpsc::channel;
    use std::sync::Arc;
    use std::time::Instant;

    use anyhow::Result;
    use llorch_engine::EngineEvent;
    use llorch_engine::{Engine, Job, LoadedModel};
    use llorch_wire::{ChatMessage, Constraint, SamplingParams};
    use serde_json::json;

    fn schema() -> Constraint {
        Constraint::JsonSchema(json!({"type": "object", "properties": {
            "title": {"type": "string", "maxLength": 40},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
            "story": {"type": "string", "minLength": 2000}},
            "required": ["title", "tags", "story"], "additionalProperties": false}))
    }

    pub fn run(lm: Arc<LoadedModel>, batches: &[usize], tg: usize, rounds: usize) -> Result<()> {
        let t = Instant::now();
        lm.constraint_compiler().map_err(anyhow::Error::msg)?;
        println!(
            "token trie of {} tokens: {:.1} ms",
            lm.tokenizer.vocab_size(),
            t.elapsed().as_secs_f64() * 1e3
        );
        let mut compile = Vec::new();
        for _ in 0..rounds.max(5) {
            let t = Instant::now();
            lm.compile_constraint(&schema())?;
            compile.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (_, med) = super::stats(compile);
        println!("schema compile: median {med:.2} ms");
        let engine = Engine::start(
            lm.clone(),
            16,
            batches.iter().copied().max().unwrap_or(1) as u32,
        );
        for &b in batches {
            let mut rate = [Vec::new(), Vec::new()];
            for _ in 0..rounds {
                for (k, constrained) in [false, true].into_iter().enumerate() {
                    rate[k].push(round(&engine, &lm, b, tg, constrained)?);
                }
            }
            let (_, free) = super::stats(rate[0].clone());
            let (_, cons) = super::stats(rate[1].clone());
            println!(
                "tg{tg} x{b:<2}: unconstrained {free:7.1} tok/s, JSON schema {cons:7.1} tok/s ({:+.1}%)",
                (cons / free - 1.0) * 100.0
            );
        }
        Ok(())
    }

    /// `b` jobs at once; aggregate tokens/s over their decode phase.
    fn round(
        engine: &Engine,
        lm: &LoadedModel,
        b: usize,
        tg: usize,
        constrained: bool,
    ) -> Result<f64> {
        let (tx, rx) = channel();
        for i in 0..b {
            let msgs = [ChatMessage {
                role: "user".into(),
                content: format!("Write story number {i} as JSON."),
            }];
            let ids = lm.tokenizer.encode(&lm.chat.render(&msgs, true)?, false)?;
            let mut job = Job::new(
                format!("bench-{i}-{constrained}"),
                ids,
                tg as u32,
                SamplingParams::greedy(),
            );
            if constrained {
                job.guide = Some(lm.compile_constraint(&schema())?);
            }
            let tx = tx.clone();
            engine
                .submit(job, Box::new(move |e: EngineEvent| tx.send(e).is_ok()))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        drop(tx);
        let (mut tokens, mut first, mut ended) = (0u64, None, 0);
        let mut last = Instant::now();
        for e in rx {
            match e {
                EngineEvent::Token { .. } => {
                    tokens += 1;
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                }
                EngineEvent::End { .. } | EngineEvent::Failed { .. } => ended += 1,
                _ => {}
            }
            if ended == b {
                break;
            }
        }
        let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
        Ok(if secs > 0.0 {
            tokens.saturating_sub(1) as f64 / secs
        } else {
            0.0
        })
    }
}

mod worker_bench {
    //! Cold start, RSS, TTFT and cancel latency of a real worker process.
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context, Result};

    fn get(addr: &str, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(addr).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut b = String::new();
        s.read_to_string(&mut b).ok()?;
        b.starts_with("HTTP/1.1 200").then_some(b)
    }

    fn post(addr: &str, path: &str, body: &str) -> Result<TcpStream> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        Ok(s)
    }

    fn peak_rss_mib(pid: u32) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    pub fn run(model: &Path, threads: usize) -> Result<()> {
        let bin = std::env::current_exe()?.with_file_name("llorch-candled");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let t0 = Instant::now();
        let mut child = Command::new(&bin)
            .arg("--model")
            .arg(model)
            .args([
                "--port",
                &port.to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        while get(&addr, "/health").is_none() {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("worker not ready");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let cold = t0.elapsed();
        let mut ttfts = Vec::new();
        let mut cancels = Vec::new();
        for round in 0..5 {
            let body = format!(
                r#"{{"job_id":"bench-{round}","prompt":"1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,","max_tokens":500,"temperature":0}}"#
            );
            let s = post(&addr, "/execute", &body)?;
            let t = Instant::now();
            let mut r = BufReader::new(s);
            let mut line = String::new();
            let mut tokens = 0;
            let mut cancel_at = None;
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    break;
                }
                // the body is chunked: match inside lines, chunk-size lines are skipped over
                if line.contains("\"type\":\"token\"") {
                    tokens += 1;
                    if tokens == 1 {
                        ttfts.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    if tokens == 20 {
                        let _ = post(
                            &addr,
                            "/cancel",
                            &format!(r#"{{"job_id":"bench-{round}"}}"#),
                        )?;
                        cancel_at = Some(Instant::now());
                    }
                }
                if line.contains("\"type\":\"end\"") {
                    if let Some(c) = cancel_at {
                        cancels.push(c.elapsed().as_secs_f64() * 1e3);
                    }
                    break;
                }
            }
        }
        let rss = peak_rss_mib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let (t_min, t_med) = super::stats(ttfts);
        let (c_min, c_med) = super::stats(cancels);
        println!(
            "worker cold start (exec → /health 200): {:.0} ms",
            cold.as_secs_f64() * 1e3
        );
        println!("worker peak RSS after 5 jobs: {rss:.0} MiB");
        println!("TTFT (38-token prompt): min {t_min:.1} ms, median {t_med:.1} ms");
        println!(
            "cancel latency (POST /cancel → end event): min {c_min:.1} ms, median {c_med:.1} ms"
        );
        Ok(())
    }
}
