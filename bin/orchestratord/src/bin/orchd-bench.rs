//! `orchd-bench`: what orchestratord costs. Starts a real worker and an orchestratord, then
//! 1. relay overhead: the same greedy request, alternately direct to the worker and through
//!    orchestratord (submit + SSE), comparing TTFT p50 and decode tok/s in the same run;
//! 2. concurrent load: N clients at once (each its own prompt) through orchestratord, aggregate
//!    generated tokens/s and TTFT p50 (the worker batches them, `--parallel`);
//! 3. admission throughput: concurrent submits until the queue answers 429.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use llorch_client::SseParser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "orchd-bench",
    about = "Relay overhead and admission throughput of orchestratord"
)]
struct Args {
    /// GGUF model for the worker (default: $LLORCH_TEST_MODEL or the cached SmolLM2).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Directory holding `llorch-candled` and `orchestratord` (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Measured requests per path (after 2 warm-ups each).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// Worker compute threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Queue capacity for the admission test (submits until 429).
    #[arg(long, default_value_t = 3000)]
    admission_capacity: u32,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

const PROMPT: &str =
    "<|im_start|>user\nWrite a short story about a robot.<|im_end|>\n<|im_start|>assistant\n";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ok(http: &reqwest::Client, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while !http
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if start.elapsed() > timeout {
            bail!("{url} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One streamed request.
struct Sample {
    ttft_ms: f64,
    /// TTFT minus the worker's own prefill time: the transport cost, without prefill jitter.
    residual_ms: f64,
    tok_per_s: f64,
    ids: Vec<u64>,
}

/// Read an SSE response until its terminal event, timing the tokens from `t0`.
async fn read_stream(resp: reqwest::Response, t0: Instant) -> anyhow::Result<Sample> {
    let mut body = resp.bytes_stream();
    let mut parser = SseParser::new();
    let (mut first, mut last) = (None, t0);
    let mut ids = Vec::new();
    while let Some(chunk) = body.next().await {
        for ev in parser.push(&chunk?) {
            match ev.event.as_str() {
                "token" => {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                    ids.push(
                        serde_json::from_str::<Value>(&ev.data)?["id"]
                            .as_u64()
                            .unwrap_or(0),
                    );
                }
                "end" => {
                    let first = first.context("no tokens")?;
                    let end: Value = serde_json::from_str(&ev.data)?;
                    let prefill = end["prefill_time_ms"].as_f64().unwrap_or(0.0);
                    let decode = last.duration_since(first).as_secs_f64();
                    let tok_per_s = if decode > 0.0 {
                        (ids.len() - 1) as f64 / decode
                    } else {
                        0.0
                    };
                    let ttft_ms = first.duration_since(t0).as_secs_f64() * 1000.0;
                    return Ok(Sample {
                        ttft_ms,
                        residual_ms: ttft_ms - prefill,
                        tok_per_s,
                        ids,
                    });
                }
                "error" => bail!("error event: {}", ev.data),
                _ => {}
            }
        }
    }
    bail!("stream ended without a terminal event")
}

async fn direct(http: &reqwest::Client, worker: &str, max_tokens: u32) -> anyhow::Result<Sample> {
    let body = json!({"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0});
    let t0 = Instant::now();
    let resp = http
        .post(format!("{worker}/execute"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    read_stream(resp, t0).await
}

async fn via_orchd(
    http: &reqwest::Client,
    orchd: &str,
    model: &str,
    max_tokens: u32,
) -> anyhow::Result<Sample> {
    via_orchd_prompt(http, orchd, model, max_tokens, PROMPT).await
}

async fn via_orchd_prompt(
    http: &reqwest::Client,
    orchd: &str,
    model: &str,
    max_tokens: u32,
    prompt: &str,
) -> anyhow::Result<Sample> {
    let body =
        json!({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0});
    let t0 = Instant::now();
    let acc: Value = http
        .post(format!("{orchd}/v2/tasks"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let events = acc["events_url"].as_str().context("events_url")?;
    let resp = http
        .get(format!("{orchd}{events}"))
        .send()
        .await?
        .error_for_status()?;
    read_stream(resp, t0).await
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Submit as fast as `concurrency` clients can until a 429; returns (accepted, seconds, latencies ms).
async fn admission(
    orchd: &str,
    model: &str,
    concurrency: usize,
    limit: usize,
) -> (usize, f64, Vec<f64>) {
    let http = reqwest::Client::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let jobs = (0..concurrency).map(|_| {
        let (http, stop, url) = (http.clone(), stop.clone(), format!("{orchd}/v2/tasks"));
        let body = json!({"model": model, "prompt": "hi", "max_tokens": 1, "priority": "batch"});
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && lat.len() < limit {
                let t = Instant::now();
                let Ok(r) = http.post(&url).json(&body).send().await else {
                    break;
                };
                if r.status().as_u16() == 429 {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        })
    });
    let lats: Vec<f64> = futures::future::join_all(jobs)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap_or_default())
        .collect();
    (lats.len(), t0.elapsed().as_secs_f64(), lats)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let bin_dir = a.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf()
    });
    let model = a
        .model
        .clone()
        .or_else(|| std::env::var_os("LLORCH_TEST_MODEL").map(PathBuf::from))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/llorch/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let (wport, oport) = (free_port(), free_port());
    let worker = format!("http://127.0.0.1:{wport}");
    let orchd = format!("http://127.0.0.1:{oport}");
    let dir = std::env::temp_dir().join(format!("orchd-bench-{oport}"));
    std::fs::create_dir_all(&dir)?;
    let _w = Proc(
        Command::new(bin_dir.join("llorch-candled"))
            .args(["--model"])
            .arg(&model)
            .args([
                "--port",
                &wport.to_string(),
                "--threads",
                &a.threads.to_string(),
                "--max-queue",
                "1",
                "--worker-id",
                "bench-w",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start llorch-candled (build it first)")?,
    );
    let _o = Proc(
        Command::new(bin_dir.join("orchestratord"))
            .args([
                "--bind",
                &format!("127.0.0.1:{oport}"),
                "--workers",
                &worker,
            ])
            .args(["--queue-capacity", &a.admission_capacity.to_string()])
            .arg("--db")
            .arg(dir.join("bench.sqlite"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start orchestratord")?,
    );
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    wait_ok(&http, &format!("{worker}/health"), Duration::from_secs(120)).await?;
    wait_ok(&http, &format!("{orchd}/ready"), Duration::from_secs(30)).await?;
    let caps: Value = http
        .get(format!("{orchd}/v2/meta/capabilities"))
        .send()
        .await?
        .json()
        .await?;
    let model_id = caps["models"][0]["model"]
        .as_str()
        .context("no model registered")?
        .to_string();

    for _ in 0..2 {
        direct(&http, &worker, a.max_tokens).await?;
        via_orchd(&http, &orchd, &model_id, a.max_tokens).await?;
    }
    let (mut d, mut o) = (Vec::new(), Vec::new());
    for i in 0..a.runs {
        // Alternate which path goes first so drift hits both equally.
        if i % 2 == 0 {
            d.push(direct(&http, &worker, a.max_tokens).await?);
            o.push(via_orchd(&http, &orchd, &model_id, a.max_tokens).await?);
        } else {
            o.push(via_orchd(&http, &orchd, &model_id, a.max_tokens).await?);
            d.push(direct(&http, &worker, a.max_tokens).await?);
        }
    }
    let same = d.iter().zip(&o).all(|(x, y)| x.ids == y.ids);
    let ttft = |s: &[Sample]| percentile(&mut s.iter().map(|x| x.ttft_ms).collect::<Vec<_>>(), 0.5);
    let tps =
        |s: &[Sample]| percentile(&mut s.iter().map(|x| x.tok_per_s).collect::<Vec<_>>(), 0.5);
    let residual = |s: &[Sample]| {
        percentile(
            &mut s.iter().map(|x| x.residual_ms).collect::<Vec<_>>(),
            0.5,
        )
    };
    let (dt, ot, dtp, otp) = (ttft(&d), ttft(&o), tps(&d), tps(&o));
    let (dr, or) = (residual(&d), residual(&o));
    println!(
        "relay ({} runs, {} tokens, greedy, same tokens: {same})",
        a.runs, a.max_tokens
    );
    println!(
        "  TTFT p50   direct {dt:8.2} ms   via orchestratord {ot:8.2} ms   overhead {:+.2} ms",
        ot - dt
    );
    println!("  TTFT-prefill p50 direct {dr:6.2} ms   via orchestratord {or:6.2} ms   overhead {:+.2} ms", or - dr);
    println!(
        "  tok/s p50  direct {dtp:8.1}      via orchestratord {otp:8.1}      ratio {:.4}",
        otp / dtp
    );

    println!(
        "concurrent load ({} tokens each, distinct prompts, greedy)",
        a.max_tokens
    );
    let mut load = Vec::new();
    for clients in [1usize, 2, 4] {
        let t0 = Instant::now();
        let runs = (0..clients).map(|c| {
            let (http, orchd, model_id) = (http.clone(), orchd.clone(), model_id.clone());
            async move {
                let mut out = Vec::new();
                for r in 0..3 {
                    let prompt = format!(
                        "<|im_start|>user\nStory {c}-{r}{}: write about a robot.<|im_end|>\n<|im_start|>assistant\n",
                        clients
                    );
                    out.push(via_orchd_prompt(&http, &orchd, &model_id, a.max_tokens, &prompt).await?);
                }
                anyhow::Ok(out)
            }
        });
        let samples: Vec<Sample> = futures::future::try_join_all(runs)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let secs = t0.elapsed().as_secs_f64();
        let tokens: usize = samples.iter().map(|s| s.ids.len()).sum();
        let mut ttfts: Vec<f64> = samples.iter().map(|s| s.ttft_ms).collect();
        let agg = tokens as f64 / secs;
        let ttft_p50 = percentile(&mut ttfts, 0.5);
        println!("  {clients} clients: {agg:7.1} tok/s aggregate, TTFT p50 {ttft_p50:7.1} ms");
        load.push(json!({"clients": clients, "tok_s": agg, "ttft_p50_ms": ttft_p50}));
    }

    let (n, secs, mut lat) = admission(
        &orchd,
        &model_id,
        a.concurrency,
        a.admission_capacity as usize * 2,
    )
    .await;
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    println!(
        "admission ({} concurrent clients, until 429)",
        a.concurrency
    );
    println!("  {n} accepted in {secs:.3} s = {:.0} submits/s; client-side latency p50 {p50:.3} ms p99 {p99:.3} ms", n as f64 / secs);
    let metrics = http
        .get(format!("{orchd}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("orchd_admission_latency_ms_"))
    {
        if line.contains("_sum")
            || line.contains("_count")
            || line.contains("le=\"0.1\"")
            || line.contains("le=\"1\"")
        {
            println!("  {line}");
        }
    }
    let summary = json!({"ttft_p50_direct_ms": dt, "ttft_p50_orchd_ms": ot, "ttft_overhead_ms": ot - dt, "ttft_minus_prefill_overhead_ms": or - dr,
        "tok_s_p50_direct": dtp, "tok_s_p50_orchd": otp, "tok_s_ratio": otp / dtp, "same_tokens": same,
        "concurrent_load": load, "admission_accepted": n, "admission_per_s": n as f64 / secs, "admission_p50_ms": p50, "admission_p99_ms": p99});
    println!("{summary}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
