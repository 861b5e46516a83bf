//! `models fit`: how much memory one worker of a model needs, and on which device it fits.
//! The estimate itself is [`llorch_catalog::memory`], shared with the worker's start-up check.

use llorch_catalog::machine;
use llorch_catalog::memory::{self, KvShape, MemoryEstimate};
use llorch_catalog::runtime::{self, WeightPath, WeightPolicy};
use llorch_catalog::{DeviceFit, FitView, ModelFormat};

use crate::cli::{Backend, FitArgs};
use crate::error::{PoolError, Result};
use crate::output::{human_bytes, print_json};
use crate::{models, Ctx};

/// Compute the estimate for `args` on this host.
pub fn estimate(ctx: &Ctx, args: &FitArgs) -> Result<FitView> {
    let cat = ctx.store.load()?;
    let (spec, builtin) = cat
        .get(&args.id)
        .ok_or_else(|| llorch_catalog::CatalogError::NotFound(args.id.clone()))?;
    let format = spec.format;
    let view = models::view(&cat, spec, builtin);
    let (present, weights, shape) = match view.local.as_ref().filter(|_| view.downloaded) {
        Some(l) => {
            let shape = match format {
                ModelFormat::Gguf => memory::gguf_shape(&l.path),
                ModelFormat::Safetensors => memory::safetensors_shape(&l.path),
            }
            .map_err(|reason| PoolError::InvalidModel {
                path: l.path.clone(),
                reason,
            })?;
            // what the tensors take once loaded (default --weights, --kernels native)
            let path = WeightPath::new(args.backend.as_str(), false, WeightPolicy::Auto);
            let weights = runtime::model_runtime_bytes(&l.path, path).unwrap_or(l.size_bytes);
            (true, weights, shape)
        }
        // Not here: the catalog size, and no cache figures until the header can be read.
        None => (false, view.spec.size_bytes, KvShape::default()),
    };
    let e = MemoryEstimate::new(
        weights,
        shape,
        args.backend.as_str(),
        args.ctx,
        args.parallel,
        args.prompt_cache_mb,
    );
    let total = e.total_bytes;
    let m = machine::inventory();
    let devices: Vec<DeviceFit> = match args.backend {
        Backend::Cpu => vec![DeviceFit {
            device: "cpu".into(),
            mem_total_bytes: m.mem_total_bytes,
            mem_free_bytes: m.mem_available_bytes,
            fits: total <= m.mem_available_bytes,
        }],
        b => m
            .gpus
            .iter()
            .filter(|g| g.backend == b.as_str())
            .map(|g| DeviceFit {
                device: format!("{}:{}", g.backend, g.index),
                mem_total_bytes: g.mem_total_bytes,
                mem_free_bytes: g.mem_free_bytes,
                fits: total <= g.mem_free_bytes,
            })
            .collect(),
    };
    Ok(FitView {
        model: args.id.clone(),
        backend: args.backend.as_str().into(),
        ctx: e.ctx,
        parallel: e.parallel,
        present,
        weights_bytes: weights,
        rope_bytes: e.rope_bytes,
        layers: shape.layers,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
        kv_bytes_per_elem: e.kv_bytes_per_elem,
        kv_cache_bytes: e.kv_cache_bytes,
        prompt_cache_bytes: e.prompt_cache_bytes,
        overhead_bytes: e.overhead_bytes,
        total_bytes: total,
        devices,
    })
}

/// `models fit`.
pub fn run(ctx: &Ctx, args: FitArgs) -> Result<()> {
    let v = estimate(ctx, &args)?;
    if ctx.json {
        print_json(&v);
        return Ok(());
    }
    println!(
        "{} on {} (ctx {} x parallel {}){}",
        v.model,
        v.backend,
        v.ctx,
        v.parallel,
        if v.present {
            ""
        } else {
            " [not on this host: weights from the catalog size, no KV figures]"
        }
    );
    println!("  weights       {:>10}", human_bytes(v.weights_bytes));
    println!("  rotary tables {:>10}", human_bytes(v.rope_bytes));
    println!(
        "  kv cache      {:>10}  (2 x {} layers x {} kv heads x {} head dim x {} ctx x {} parallel x {} B)",
        human_bytes(v.kv_cache_bytes),
        v.layers,
        v.kv_heads,
        v.head_dim,
        v.ctx,
        v.parallel,
        v.kv_bytes_per_elem
    );
    println!("  prompt cache  {:>10}", human_bytes(v.prompt_cache_bytes));
    println!("  overhead      {:>10}", human_bytes(v.overhead_bytes));
    println!("  total         {:>10}", human_bytes(v.total_bytes));
    if v.devices.is_empty() {
        println!("  no {} device on this host", v.backend);
    }
    for d in &v.devices {
        println!(
            "  {:<12} {:>10} free of {:>10}: {}",
            d.device,
            human_bytes(d.mem_free_bytes),
            human_bytes(d.mem_total_bytes),
            if d.fits { "fits" } else { "does NOT fit" }
        );
    }
    Ok(())
}
