//! The real worker's start-up: memory check, compute threads, device, model load (all before
//! the port is bound, so a worker that answers `/health` is ready), then [`crate::serve`] over
//! the candle engine.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use llorch_engine::LoadOptions;

use crate::candle::{self, CandleBackend};
use crate::config::Config;
use crate::memory::MemoryMonitor;
use crate::routes::{AppState, DeviceReport};

/// Size the compute pools to `threads`. The engine's kernels run on rayon's global pool, built
/// here. Candle sizes its own pools (matmul parallelism, its quantized-kernel barrier pool) from
/// `RAYON_NUM_THREADS` when it first uses them and offers no builder, so that variable is set
/// for it; call this before any other thread exists (before the async runtime).
fn configure_threads(threads: usize) {
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        tracing::warn!(error = %e, "the compute thread pool was already built");
    }
}

/// Load the model, bind, serve until SIGTERM/SIGINT.
pub fn run(cfg: Config) -> Result<()> {
    let started = Instant::now();
    // before the (slow) model load: a configuration that cannot fit fails at once
    let estimate = crate::memory::check(&cfg)?;
    configure_threads(cfg.threads);
    let opts = LoadOptions {
        device: candle::device(cfg.compute, cfg.device)?,
        requant: cfg.weights.requant(),
        max_context: cfg.ctx_size,
        chat_template: cfg.chat_template.clone(),
        kernels: cfg.kernels,
    };
    let lm = llorch_engine::load(&cfg.model, &opts)?;
    tracing::info!(
        model = %lm.info.name, arch = lm.info.architecture, quant = %lm.info.quantization,
        runtime_quant = %lm.info.runtime_quantization, kernels = %lm.info.kernels, ctx = lm.info.context_length,
        load_ms = format!("{:.0}", lm.info.load_time_ms), "model loaded"
    );
    let chat = &lm.info.chat_template;
    if chat.probe.as_ref().is_some_and(|p| !p.learned()) {
        tracing::warn!(template = %chat.name, "{}", chat.reason);
    } else {
        tracing::info!(template = %chat.name, reason = %chat.reason, "chat template");
    }
    let device = DeviceReport {
        backend: cfg.compute.as_str(),
        device: cfg.device_name(),
        threads: cfg.threads,
        memory: Some(MemoryMonitor::new(
            cfg.compute,
            cfg.device,
            estimate.map_or(0, |e| e.total_bytes),
        )),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = crate::serve::bind(cfg.server.bind).await?;
        let opts = candle::engine_options(cfg.max_queue, cfg.parallel, cfg.prompt_cache_mb);
        let backend = Arc::new(CandleBackend::new(lm, opts));
        let state = AppState::new(backend, &cfg.server, device, started);
        crate::serve::serve(listener, state, &cfg.server).await
    })
}
