//! How much memory one worker of a model needs: the one estimate that `llorch-pool models fit`,
//! the fleet's placement and the worker's own start-up check all use.
//!
//! total = weights + rotary tables + KV cache + prompt cache budget + overhead, where weights
//! are what the tensors take once loaded ([`crate::runtime`]: each tensor at the type and layout
//! the engine runs it as; the file size when the header is unreadable), the rotary tables
//! ctx x head_dim x 4 bytes per table (Gemma 3 has two), and
//! KV cache = 2 (K and V) x layers x kv_heads x head_dim x ctx x parallel x bytes per element,
//! read from the GGUF header (or `config.json` for safetensors). The worker's cache is F16
//! (2 bytes per element) on the CPU and F32 (4 bytes) on CUDA and Metal, where candle's attention
//! wants one dtype. ctx defaults to the worker's default (the model's trained context, at most
//! 8192) and parallel to 4.

use std::path::Path;

/// Fixed runtime overhead per worker: buffers, tokenizer, activations, the process itself.
/// Measured RSS minus weights: about 57 MiB for SmolLM2-135M at ctx 512; rounded up.
pub const OVERHEAD_BYTES: u64 = 96 * 1024 * 1024;
/// The worker's default `--ctx-size` cap.
pub const DEFAULT_CTX_CAP: u64 = 8192;
/// The worker's default `--parallel`.
pub const DEFAULT_PARALLEL: u32 = 4;
/// The worker's default `--prompt-cache-mb`.
pub const DEFAULT_PROMPT_CACHE_MB: u64 = 512;

/// Bytes per cached K/V element on a backend (`cpu`, `cuda`, `metal`): F16 on the CPU, F32 on
/// the GPU backends.
pub fn kv_bytes_per_elem(backend: &str) -> u64 {
    if backend == "cpu" {
        2
    } else {
        4
    }
}

/// Shape of the attention cache, from the model's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvShape {
    pub layers: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    /// The model's trained context, when the metadata has it.
    pub context_length: Option<u64>,
    /// Rotary tables the engine builds (Gemma 3: global and local).
    pub rope_tables: u64,
}

impl KvShape {
    /// 2 x layers x kv_heads x head_dim x ctx x parallel x bytes per element.
    pub fn cache_bytes(&self, ctx: u64, parallel: u32, bytes_per_elem: u64) -> u64 {
        2 * self.layers * self.kv_heads * self.head_dim * ctx * parallel as u64 * bytes_per_elem
    }

    /// Bytes of the rotary tables (cos and sin of ctx x head_dim / 2, F32) at `ctx`.
    pub fn rope_bytes(&self, ctx: u64) -> u64 {
        self.rope_tables * ctx * self.head_dim * 4
    }

    /// The context a worker serves with `--ctx-size requested` (None: the trained context,
    /// at most [`DEFAULT_CTX_CAP`]).
    pub fn serving_ctx(&self, requested: Option<u64>) -> u64 {
        let trained = self.context_length.unwrap_or(DEFAULT_CTX_CAP);
        match requested {
            Some(n) => n.min(trained),
            None => trained.min(DEFAULT_CTX_CAP),
        }
    }
}

/// Read the KV shape of a GGUF file (the header only). Err: why the header is unreadable.
pub fn gguf_shape(path: &Path) -> Result<KvShape, String> {
    let (h, _) = crate::gguf::read(path).map_err(|e| e.to_string())?;
    let arch = h.architecture().unwrap_or_default();
    let num = |k: &str| h.arch_u64(k);
    let layers = num("block_count").unwrap_or(0);
    let heads = num("attention.head_count").unwrap_or(0);
    let kv_heads = num("attention.head_count_kv").unwrap_or(heads);
    let head_dim = num("attention.key_length").unwrap_or_else(|| {
        num("embedding_length")
            .map(|e| e / heads.max(1))
            .unwrap_or(0)
    });
    Ok(KvShape {
        layers,
        kv_heads,
        head_dim,
        context_length: num("context_length"),
        rope_tables: if arch == "gemma3" { 2 } else { 1 },
    })
}

/// Read the KV shape of a safetensors model directory (`config.json`).
pub fn safetensors_shape(dir: &Path) -> Result<KvShape, String> {
    let path = dir.join("config.json");
    let c: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| format!("{}: missing or not JSON", path.display()))?;
    let n = |k: &str| c[k].as_u64();
    let heads = n("num_attention_heads").unwrap_or(0);
    Ok(KvShape {
        layers: n("num_hidden_layers").unwrap_or(0),
        kv_heads: n("num_key_value_heads").unwrap_or(heads),
        head_dim: n("head_dim").unwrap_or_else(|| n("hidden_size").unwrap_or(0) / heads.max(1)),
        context_length: n("max_position_embeddings"),
        rope_tables: match c["model_type"].as_str() {
            Some(t) if t.starts_with("gemma3") => 2,
            _ => 1,
        },
    })
}

/// The KV shape of a model file (GGUF) or directory (safetensors).
pub fn model_shape(path: &Path) -> Result<KvShape, String> {
    if path.is_dir() {
        safetensors_shape(path)
    } else {
        gguf_shape(path)
    }
}

/// Bytes of the weights: the file, or every `*.safetensors` file of a directory.
pub fn weights_bytes(path: &Path) -> u64 {
    if !path.is_dir() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// What one worker configuration needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub ctx: u64,
    pub parallel: u32,
    pub weights_bytes: u64,
    /// The rotary tables at `ctx`.
    pub rope_bytes: u64,
    pub kv_bytes_per_elem: u64,
    pub kv_cache_bytes: u64,
    pub prompt_cache_bytes: u64,
    pub overhead_bytes: u64,
    pub total_bytes: u64,
    shape: KvShape,
}

impl MemoryEstimate {
    /// Estimate for `backend` from the weights' loaded size (see [`crate::runtime`]) with the worker's `--ctx-size`, `--parallel`, `--prompt-cache-mb`
    /// (None: the worker's defaults).
    pub fn new(
        weights_bytes: u64,
        shape: KvShape,
        backend: &str,
        ctx: Option<u64>,
        parallel: Option<u32>,
        prompt_cache_mb: Option<u64>,
    ) -> Self {
        let ctx = shape.serving_ctx(ctx);
        let parallel = parallel.unwrap_or(DEFAULT_PARALLEL);
        let kv_bytes_per_elem = kv_bytes_per_elem(backend);
        let kv_cache_bytes = shape.cache_bytes(ctx, parallel, kv_bytes_per_elem);
        let prompt_cache_bytes = prompt_cache_mb.unwrap_or(DEFAULT_PROMPT_CACHE_MB) * 1024 * 1024;
        let rope_bytes = shape.rope_bytes(ctx);
        MemoryEstimate {
            ctx,
            parallel,
            weights_bytes,
            rope_bytes,
            kv_bytes_per_elem,
            kv_cache_bytes,
            prompt_cache_bytes,
            overhead_bytes: OVERHEAD_BYTES,
            total_bytes: weights_bytes
                + rope_bytes
                + kv_cache_bytes
                + prompt_cache_bytes
                + OVERHEAD_BYTES,
            shape,
        }
    }

    /// The KV shape the estimate used.
    pub fn shape(&self) -> KvShape {
        self.shape
    }

    /// What to change so the worker fits in `free` bytes: the largest `--ctx-size` at this
    /// parallelism, the largest `--parallel` at this context, or that the weights alone do not
    /// fit. One sentence, for error messages.
    pub fn advice(&self, free: u64) -> String {
        // what does not grow with ctx or parallel
        let fixed = self.weights_bytes + self.overhead_bytes + self.prompt_cache_bytes;
        if fixed >= free {
            let without_cache = self.weights_bytes + self.overhead_bytes;
            return if without_cache < free && self.prompt_cache_bytes > 0 {
                format!(
                    "even with no KV cache it needs {} with --prompt-cache-mb {}: lower \
                     --prompt-cache-mb, or use a smaller quantization or another device",
                    human_bytes(fixed),
                    self.prompt_cache_bytes / (1024 * 1024)
                )
            } else {
                format!(
                    "the weights and runtime alone need {}: use a smaller quantization or \
                     another device",
                    human_bytes(without_cache)
                )
            };
        }
        // one slot's KV cache per position, and the rotary tables per position of context
        let per_position = self.shape.cache_bytes(1, 1, self.kv_bytes_per_elem).max(1);
        let room = free - fixed;
        let max_ctx =
            room / (per_position * u64::from(self.parallel.max(1)) + self.shape.rope_bytes(1));
        let max_parallel = room.saturating_sub(self.rope_bytes) / (per_position * self.ctx.max(1));
        let mut ways = Vec::new();
        if max_ctx >= 1 {
            ways.push(format!(
                "--ctx-size {max_ctx} (or less) at --parallel {}",
                self.parallel
            ));
        }
        if max_parallel >= 1 {
            ways.push(format!(
                "--parallel {max_parallel} (or less) at --ctx-size {}",
                self.ctx
            ));
        }
        if ways.is_empty() {
            "lower --ctx-size and --parallel".into()
        } else {
            format!("use {}", ways.join(", or "))
        }
    }

    /// `weights W + KV cache K (ctx C x parallel P, B bytes/elem) + prompt cache Q + overhead O`.
    pub fn breakdown(&self) -> String {
        format!(
            "weights {} + rotary tables {} + KV cache {} (ctx {} x parallel {}, {} B/element) + \
             prompt cache {} + overhead {}",
            human_bytes(self.weights_bytes),
            human_bytes(self.rope_bytes),
            human_bytes(self.kv_cache_bytes),
            self.ctx,
            self.parallel,
            self.kv_bytes_per_elem,
            human_bytes(self.prompt_cache_bytes),
            human_bytes(self.overhead_bytes)
        )
    }
}

/// Bytes in decimal units: `512 B`, `98.4 MB`, `1.5 GB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M: 30 layers, 3 kv heads, head dim 64, trained on 8192.
    const SMOL: KvShape = KvShape {
        layers: 30,
        kv_heads: 3,
        head_dim: 64,
        context_length: Some(8192),
        rope_tables: 1,
    };

    #[test]
    fn kv_formula_and_dtype_per_backend() {
        assert_eq!(SMOL.cache_bytes(2048, 4, 2), 2 * 30 * 3 * 64 * 2048 * 4 * 2);
        assert_eq!(SMOL.cache_bytes(0, 4, 2), 0);
        let cpu = MemoryEstimate::new(100, SMOL, "cpu", Some(2048), Some(4), Some(0));
        let cuda = MemoryEstimate::new(100, SMOL, "cuda", Some(2048), Some(4), Some(0));
        assert_eq!(cuda.kv_cache_bytes, 2 * cpu.kv_cache_bytes);
        assert_eq!(cpu.rope_bytes, 2048 * 64 * 4);
        assert_eq!(
            cpu.total_bytes,
            100 + cpu.rope_bytes + cpu.kv_cache_bytes + OVERHEAD_BYTES
        );
    }

    #[test]
    fn serving_ctx_follows_the_worker() {
        assert_eq!(SMOL.serving_ctx(None), 8192);
        assert_eq!(SMOL.serving_ctx(Some(100_000)), 8192);
        assert_eq!(SMOL.serving_ctx(Some(512)), 512);
        let long = KvShape {
            context_length: Some(131_072),
            ..SMOL
        };
        assert_eq!(long.serving_ctx(None), DEFAULT_CTX_CAP);
    }

    #[test]
    fn advice_names_a_configuration_that_fits() {
        let e = MemoryEstimate::new(100 << 20, SMOL, "cpu", Some(8192), Some(16), Some(0));
        let free = 400 << 20;
        assert!(e.total_bytes > free);
        let a = e.advice(free);
        // the suggested ctx must fit at parallel 16
        let ctx: u64 = a
            .split("--ctx-size ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no ctx in {a}"));
        let fits = MemoryEstimate::new(100 << 20, SMOL, "cpu", Some(ctx), Some(16), Some(0));
        assert!(fits.total_bytes <= free, "{a}");
        let over = MemoryEstimate::new(100 << 20, SMOL, "cpu", Some(ctx + 1), Some(16), Some(0));
        assert!(over.total_bytes > free, "{a}");
        // weights alone too big
        assert!(e.advice(50 << 20).contains("weights and runtime alone"));
        // the prompt cache is what does not fit
        let pc = MemoryEstimate::new(100 << 20, SMOL, "cpu", Some(8192), Some(1), Some(512));
        assert!(pc.advice(400 << 20).contains("--prompt-cache-mb"));
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(98_400_000), "98.4 MB");
        assert_eq!(human_bytes(1_500_000_000), "1.5 GB");
    }
}
