//! Device memory: the start-up check (the shared estimate, [`llorch_catalog::memory`], against
//! what the device has free or what `--max-memory-mb` allows) and what `/health` and the
//! `worker_vram_bytes` metric report while serving.
//!
//! On CUDA the free and total memory come from `nvidia-smi` (the driver's view, every process
//! on the GPU); on the CPU the used memory is this process's RSS and the free memory is the
//! kernel's `MemAvailable`. The CPU commits the KV cache lazily (untouched cache costs address
//! space only) and the OS can swap, so there an estimate above `MemAvailable` is a warning;
//! on a GPU, and against `--max-memory-mb` anywhere, it refuses the start.

use anyhow::{bail, Result};
use llorch_catalog::machine;
use llorch_catalog::memory::{self, human_bytes, MemoryEstimate};
use llorch_catalog::runtime::{self, WeightPath};
use llorch_wire::WorkerMemory;

use crate::cli::Compute;
use crate::config::Config;

/// Stable prefix of the start-up error when the worker would not fit.
pub const INSUFFICIENT_VRAM: &str = "INSUFFICIENT_VRAM";

/// Free and total memory of a device, and where the numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// `meminfo` or `nvidia-smi`.
    pub source: &'static str,
}

/// The device's memory now (None: unknown, e.g. Metal, or `nvidia-smi` missing).
pub fn device_memory(backend: Compute, device: usize) -> Option<DeviceMemory> {
    match backend {
        Compute::Cpu => {
            let (total_bytes, free_bytes) = machine::memory();
            (total_bytes > 0).then_some(DeviceMemory {
                total_bytes,
                free_bytes,
                source: "meminfo",
            })
        }
        Compute::Cuda => {
            let g = machine::cuda_gpu(u32::try_from(device).ok()?)?;
            Some(DeviceMemory {
                total_bytes: g.mem_total_bytes,
                free_bytes: g.mem_free_bytes,
                source: "nvidia-smi",
            })
        }
        Compute::Metal => None,
    }
}

/// Estimate what this configuration needs and refuse a start that cannot fit. Runs before the
/// model load (it reads the header only), so a refused configuration fails in milliseconds.
/// None when the header is unreadable: the load then reports what is wrong with the file.
pub fn check(cfg: &Config) -> Result<Option<MemoryEstimate>> {
    let Ok(shape) = memory::model_shape(&cfg.model) else {
        return Ok(None);
    };
    let generic = cfg.kernels == llorch_engine::model::Kernels::Generic;
    let path = WeightPath::new(cfg.compute.as_str(), generic, cfg.weights.policy());
    let weights = runtime::model_runtime_bytes(&cfg.model, path)
        .unwrap_or_else(|_| memory::weights_bytes(&cfg.model));
    let est = MemoryEstimate::new(
        weights,
        shape,
        // the generic path keeps an F32 cache on any device, as a GPU does
        if generic {
            "cuda"
        } else {
            cfg.compute.as_str()
        },
        cfg.ctx_size.map(|n| n as u64),
        Some(cfg.parallel),
        Some(cfg.prompt_cache_mb as u64),
    );
    let dev = device_memory(cfg.compute, cfg.device);
    if let Some(reason) = refusal(&est, dev, cfg) {
        bail!("{reason}");
    }
    match dev {
        Some(d) if est.total_bytes > d.free_bytes => tracing::warn!(
            needed = %human_bytes(est.total_bytes), available = %human_bytes(d.free_bytes),
            "the estimate exceeds the memory available now; the CPU commits the KV cache as it \
             fills, so this worker starts, but long contexts on every slot may swap"
        ),
        Some(d) => tracing::info!(
            estimate = %human_bytes(est.total_bytes), free = %human_bytes(d.free_bytes),
            source = d.source, "memory"
        ),
        None => tracing::info!(
            estimate = %human_bytes(est.total_bytes),
            "memory: the device's free memory is unknown, no start-up check"
        ),
    }
    Ok(Some(est))
}

/// Why this configuration must not start (None: it may).
fn refusal(est: &MemoryEstimate, dev: Option<DeviceMemory>, cfg: &Config) -> Option<String> {
    let device = cfg.device_name();
    let needs = |what: String, free: u64| {
        format!(
            "{INSUFFICIENT_VRAM}: this worker needs about {} ({}) but {what}; {}",
            human_bytes(est.total_bytes),
            est.breakdown(),
            est.advice(free)
        )
    };
    if let Some(mb) = cfg.max_memory_mb {
        let cap = mb * 1024 * 1024;
        if est.total_bytes > cap {
            return Some(needs(
                format!("--max-memory-mb allows {}", human_bytes(cap)),
                cap,
            ));
        }
    }
    match dev {
        Some(d) if cfg.compute != Compute::Cpu && est.total_bytes > d.free_bytes => Some(needs(
            format!(
                "{device} has {} free of {} ({})",
                human_bytes(d.free_bytes),
                human_bytes(d.total_bytes),
                d.source
            ),
            d.free_bytes,
        )),
        _ => None,
    }
}

/// What `/health` reports: memory in use on the worker's device now (CPU: this process's RSS;
/// CUDA: the device's used memory, every process), the device total, and the start-up estimate.
pub fn report(backend: Compute, device: usize, estimate_bytes: u64) -> WorkerMemory {
    report_from(
        backend,
        device_memory(backend, device),
        machine::process_rss_bytes,
        estimate_bytes,
    )
}

/// [`report`] from the device's numbers: a GPU's used memory is total − free (the driver's
/// view, every process on it); the CPU, and a GPU whose numbers are unknown (Metal today,
/// `nvidia-smi` missing), report this process's RSS.
fn report_from(
    backend: Compute,
    dev: Option<DeviceMemory>,
    rss: impl FnOnce() -> u64,
    estimate_bytes: u64,
) -> WorkerMemory {
    let used_bytes = match (backend, dev) {
        (Compute::Cpu, _) | (_, None) => rss(),
        (_, Some(d)) => d.total_bytes.saturating_sub(d.free_bytes),
    };
    WorkerMemory {
        used_bytes,
        total_bytes: dev.map(|d| d.total_bytes),
        estimate_bytes,
        source: match (backend, dev) {
            (Compute::Cpu, _) | (_, None) => "rss".into(),
            (_, Some(d)) => d.source.into(),
        },
    }
}

/// [`report`], refreshed at most every two seconds: `/health` is polled often and `nvidia-smi`
/// takes tens of milliseconds.
pub struct MemoryMonitor {
    backend: Compute,
    device: usize,
    estimate_bytes: u64,
    last: std::sync::Mutex<Option<(std::time::Instant, WorkerMemory)>>,
}

impl MemoryMonitor {
    /// A monitor for the worker's device, with the start-up estimate.
    pub fn new(backend: Compute, device: usize, estimate_bytes: u64) -> Self {
        MemoryMonitor {
            backend,
            device,
            estimate_bytes,
            last: std::sync::Mutex::new(None),
        }
    }

    /// The memory report, at most two seconds old.
    pub fn current(&self) -> WorkerMemory {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((at, r)) if at.elapsed() < std::time::Duration::from_secs(2) => r.clone(),
            _ => {
                let r = report(self.backend, self.device, self.estimate_bytes);
                *last = Some((std::time::Instant::now(), r.clone()));
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use llorch_catalog::memory::KvShape;

    fn est(ctx: u64, parallel: u32) -> MemoryEstimate {
        let smol = KvShape {
            layers: 30,
            kv_heads: 3,
            head_dim: 64,
            context_length: Some(8192),
            rope_tables: 1,
        };
        MemoryEstimate::new(98 << 20, smol, "cuda", Some(ctx), Some(parallel), Some(0))
    }

    fn args(extra: &[&str]) -> Config {
        let mut v = vec!["llorch-candled", "--model", "m.gguf"];
        v.extend_from_slice(extra);
        Config::from_args(crate::cli::Args::parse_from(v)).unwrap()
    }

    #[test]
    fn a_gpu_that_is_too_small_refuses_with_the_numbers() {
        let gpu = DeviceMemory {
            total_bytes: 1 << 30,
            free_bytes: 300 << 20,
            source: "nvidia-smi",
        };
        let e = est(8192, 8);
        let why = refusal(
            &e,
            Some(gpu),
            &args(&["--backend", "cuda", "--device", "1"]),
        )
        .expect("refused");
        assert!(why.starts_with(INSUFFICIENT_VRAM), "{why}");
        assert!(why.contains("cuda:1 has 314.6 MB free"), "{why}");
        assert!(why.contains("ctx 8192 x parallel 8"), "{why}");
        assert!(why.contains("--ctx-size"), "{why}");
        // the same on the CPU only warns; a small configuration passes
        assert!(refusal(&e, Some(gpu), &args(&[])).is_none());
        assert!(refusal(&est(512, 1), Some(gpu), &args(&["--backend", "cuda"])).is_none());
        // unknown free memory: no refusal
        assert!(refusal(&e, None, &args(&["--backend", "cuda"])).is_none());
    }

    #[test]
    fn max_memory_mb_refuses_on_any_backend() {
        let e = est(8192, 8);
        let why = refusal(&e, None, &args(&["--max-memory-mb", "200"])).expect("refused");
        assert!(why.contains("--max-memory-mb allows 209.7 MB"), "{why}");
        assert!(refusal(&est(256, 1), None, &args(&["--max-memory-mb", "300"])).is_none());
    }

    #[test]
    fn a_gpu_report_is_total_minus_free_and_unknown_is_rss() {
        let gpu = DeviceMemory {
            total_bytes: 24 << 30,
            free_bytes: 20 << 30,
            source: "nvidia-smi",
        };
        let r = report_from(Compute::Cuda, Some(gpu), || 1, 9);
        assert_eq!(r.used_bytes, 4 << 30);
        assert_eq!(r.total_bytes, Some(24 << 30));
        assert_eq!((r.source.as_str(), r.estimate_bytes), ("nvidia-smi", 9));
        // free above total (a driver race) never underflows
        let odd = DeviceMemory {
            free_bytes: 25 << 30,
            ..gpu
        };
        assert_eq!(report_from(Compute::Cuda, Some(odd), || 1, 0).used_bytes, 0);
        // Metal (no figure today) and a CUDA worker without nvidia-smi: this process's RSS
        for b in [Compute::Metal, Compute::Cuda] {
            let r = report_from(b, None, || 123, 0);
            assert_eq!(
                (r.used_bytes, r.total_bytes, r.source.as_str()),
                (123, None, "rss")
            );
        }
    }

    #[test]
    fn the_cpu_report_is_this_process() {
        let r = report(Compute::Cpu, 0, 7);
        assert_eq!(r.source, "rss");
        assert!(r.used_bytes > 0 && r.total_bytes.unwrap_or(0) > r.used_bytes);
        assert_eq!(r.estimate_bytes, 7);
    }
}
