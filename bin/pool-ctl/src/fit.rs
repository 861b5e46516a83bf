//! `models fit`: how much memory one worker of a model needs, and on which device it fits.
//!
//! total = weights (file sizes) + KV cache + prompt cache budget + overhead, where
//! KV cache = 2 (K and V) x layers x kv_heads x head_dim x ctx x parallel x bytes per element,
//! read from the GGUF header (or `config.json` for safetensors). The worker's cache is F16
//! (2 bytes per element) on every backend; ctx defaults to the worker's default (the model's
//! trained context, at most 8192) and parallel to 4.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file;
use llorch_catalog::{DeviceFit, FitView, ModelFormat};

use crate::cli::{Backend, FitArgs};
use crate::error::{PoolError, Result};
use crate::output::{human_bytes, print_json};
use crate::{machine, models, Ctx};

/// Bytes per cached K/V element (the worker's KV cache is F16).
pub const KV_BYTES_PER_ELEM: u64 = 2;
/// Fixed runtime overhead per worker: buffers, tokenizer, activations, the process itself.
pub const OVERHEAD_BYTES: u64 = 96 * 1024 * 1024;
/// The worker's default `--ctx-size` cap and `--parallel`, `--prompt-cache-mb`.
pub const DEFAULT_CTX_CAP: u64 = 8192;
pub const DEFAULT_PARALLEL: u32 = 4;
pub const DEFAULT_PROMPT_CACHE_MB: u64 = 512;

/// Shape of the attention cache, from the model's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvShape {
    pub layers: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub context_length: Option<u64>,
}

impl KvShape {
    /// 2 x layers x kv_heads x head_dim x ctx x parallel x bytes per element.
    pub fn cache_bytes(&self, ctx: u64, parallel: u32) -> u64 {
        2 * self.layers * self.kv_heads * self.head_dim * ctx * parallel as u64 * KV_BYTES_PER_ELEM
    }
}

/// Read the KV shape of a GGUF file.
pub fn gguf_shape(path: &Path) -> Result<KvShape> {
    let file = File::open(path).map_err(|e| PoolError::io("open", path, e))?;
    let content = gguf_file::Content::read(&mut BufReader::new(file)).map_err(|e| {
        PoolError::InvalidModel {
            path: path.to_path_buf(),
            reason: format!("bad GGUF header: {e}"),
        }
    })?;
    let md = &content.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    let num = |k: &str| {
        md.get(&format!("{arch}.{k}")).and_then(|v| {
            v.to_u64()
                .ok()
                .or_else(|| v.to_u32().ok().map(u64::from))
                .or_else(|| v.to_i32().ok().and_then(|n| u64::try_from(n).ok()))
        })
    };
    let layers = num("block_count").unwrap_or(0);
    let heads = num("attention.head_count").unwrap_or(0);
    let kv_heads = num("attention.head_count_kv").unwrap_or(heads);
    let head_dim = num("attention.key_length").unwrap_or_else(|| {
        num("embedding_length")
            .zip(Some(heads))
            .map(|(e, h)| e / h.max(1))
            .unwrap_or(0)
    });
    Ok(KvShape {
        layers,
        kv_heads,
        head_dim,
        context_length: num("context_length"),
    })
}

/// Read the KV shape of a safetensors model directory (`config.json`).
pub fn safetensors_shape(dir: &Path) -> Result<KvShape> {
    let path = dir.join("config.json");
    let c: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| PoolError::InvalidModel {
            path: path.clone(),
            reason: "config.json missing or not JSON".into(),
        })?;
    let n = |k: &str| c[k].as_u64();
    let heads = n("num_attention_heads").unwrap_or(0);
    Ok(KvShape {
        layers: n("num_hidden_layers").unwrap_or(0),
        kv_heads: n("num_key_value_heads").unwrap_or(heads),
        head_dim: n("head_dim").unwrap_or_else(|| n("hidden_size").unwrap_or(0) / heads.max(1)),
        context_length: n("max_position_embeddings"),
    })
}

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
                ModelFormat::Gguf => gguf_shape(&l.path)?,
                ModelFormat::Safetensors => safetensors_shape(&l.path)?,
            };
            (true, l.size_bytes, shape)
        }
        // Not here: the catalog size, and no cache figures until the header can be read.
        None => (false, view.spec.size_bytes, KvShape::default()),
    };
    let ctx_len = args.ctx.unwrap_or_else(|| {
        shape
            .context_length
            .unwrap_or(DEFAULT_CTX_CAP)
            .min(DEFAULT_CTX_CAP)
    });
    let parallel = args.parallel.unwrap_or(DEFAULT_PARALLEL);
    let kv = shape.cache_bytes(ctx_len, parallel);
    let prompt_cache = args.prompt_cache_mb.unwrap_or(DEFAULT_PROMPT_CACHE_MB) * 1024 * 1024;
    let total = weights + kv + prompt_cache + OVERHEAD_BYTES;
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
        ctx: ctx_len,
        parallel,
        present,
        weights_bytes: weights,
        layers: shape.layers,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
        kv_bytes_per_elem: KV_BYTES_PER_ELEM,
        kv_cache_bytes: kv,
        prompt_cache_bytes: prompt_cache,
        overhead_bytes: OVERHEAD_BYTES,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_formula() {
        // SmolLM2-135M: 30 layers, 3 kv heads, head dim 64.
        let s = KvShape {
            layers: 30,
            kv_heads: 3,
            head_dim: 64,
            context_length: Some(8192),
        };
        assert_eq!(s.cache_bytes(2048, 4), 2 * 30 * 3 * 64 * 2048 * 4 * 2);
        assert_eq!(s.cache_bytes(0, 4), 0);
    }
}
