//! What the weights of a model take in memory once loaded: per tensor, the type the engine runs
//! it as (its stored type, or what the load policy converts it to) at that type's size in memory.
//! The per-matrix type decision ([`WeightPath::runtime_type`]) is the one llorch-engine's loader
//! calls; llorch-candled's `memory_estimate` test loads real models and checks that this estimate
//! equals what they allocate.
//!
//! - Vectors (norms, biases): F32 on the device.
//! - The native CPU path (`--kernels native` on the CPU): matrices of the types the engine has
//!   kernels for run in its unpacked block layout (f16 scales widened to f32: a few bytes more per
//!   block than in the file); the `--weights` policy converts some types to Q8_0 first.
//! - Everywhere else (GPU, `--kernels generic`, `--weights stored`): matrices as stored, in
//!   candle's layout (the file's), except F32/F16/BF16 matrices, which candle widens to F32.
//! - An untied token-embedding table stays as stored (rows are dequantized on lookup).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use candle_core::quantized::GgmlDType;

/// The worker's `--weights` policy on the native CPU path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightPolicy {
    /// `auto`: Q5_1, F16 and BF16 matrices become Q8_0 (Q4_1 and Q5_0 too without AVX2/FMA).
    Auto,
    /// `q8_0`: Q4_1, Q5_0, Q5_1, F16 and BF16 matrices become Q8_0.
    Q8_0,
    /// `stored`: every matrix as stored, on candle's kernels.
    Stored,
}

/// How a worker runs its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightPath {
    /// The engine's own CPU path (the CPU backend with `--kernels native`).
    pub native_cpu: bool,
    /// The `--weights` policy (native CPU path only).
    pub policy: WeightPolicy,
    /// Whether the engine's AVX2/FMA kernels run on this CPU.
    pub own_kernels: bool,
}

impl WeightPath {
    /// The path for `backend` (`cpu`, `cuda`, `metal`) with the default policy and
    /// `--kernels native` (or `generic` when `generic`), on this machine's CPU.
    pub fn new(backend: &str, generic: bool, policy: WeightPolicy) -> Self {
        WeightPath {
            native_cpu: backend == "cpu" && !generic,
            policy,
            own_kernels: own_kernels(),
        }
    }

    fn converts(&self) -> bool {
        self.native_cpu && self.policy != WeightPolicy::Stored
    }

    /// The type a matrix stored as `dt` runs as: THE load decision, used by the engine when it
    /// loads and by the estimate here. Only the native CPU path converts, and only under the
    /// `auto`/`q8_0` policies: Q4_1 and Q5_0 stay on the engine's kernels under `auto` when
    /// they run here; Q4_1, Q5_0, Q5_1, F16 and BF16 become Q8_0 otherwise; every other type
    /// runs as stored.
    pub fn runtime_type(&self, dt: GgmlDType) -> GgmlDType {
        use GgmlDType as G;
        if !self.converts() {
            return dt;
        }
        match (self.policy, dt) {
            (WeightPolicy::Auto, G::Q4_1 | G::Q5_0) if self.own_kernels => dt,
            (_, G::Q4_1 | G::Q5_0 | G::Q5_1 | G::F16 | G::BF16) => G::Q8_0,
            _ => dt,
        }
    }

    /// [`runtime_type`](Self::runtime_type) for a matrix of `cols` columns: one whose rows
    /// are not whole Q8_0 blocks (32) stays as stored.
    pub fn matrix_type(&self, dt: GgmlDType, cols: usize) -> GgmlDType {
        if cols.is_multiple_of(32) {
            self.runtime_type(dt)
        } else {
            dt
        }
    }

    /// Bytes of an `n × k` matrix of type `dt` wrapped for the matmul: the engine's layout
    /// where its kernels take it, candle's otherwise (which widens dense types to F32).
    fn matrix_bytes(&self, dt: GgmlDType, elems: u64) -> u64 {
        if self.converts() && self.own_kernels {
            if let Some(b) = own_block_bytes(dt) {
                return elems / dt.block_size() as u64 * b;
            }
        }
        match dt {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => elems * 4,
            _ => stored_bytes(dt, elems),
        }
    }
}

/// True when this CPU has AVX2 and FMA (the engine's kernels run only then).
pub fn own_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Bytes per block of the engine's own kernel layouts (`repr(C)` blocks: f32 scales, unpacked
/// sub-block scales), for the types it has kernels for.
fn own_block_bytes(dt: GgmlDType) -> Option<u64> {
    use GgmlDType as G;
    Some(match dt {
        G::Q4_1 => 24,
        G::Q5_0 => 24,
        G::Q8_0 => 36,
        G::Q4K => 152,
        G::Q5K => 184,
        G::Q6K => 212,
        _ => return None,
    })
}

fn stored_bytes(dt: GgmlDType, elems: u64) -> u64 {
    elems / dt.block_size() as u64 * dt.type_size() as u64
}

/// One tensor: name, stored type, shape (rows, cols for a matrix).
struct TensorMeta {
    name: String,
    dtype: GgmlDType,
    dims: Vec<u64>,
    /// From safetensors: read as dense F32, quantized to Q8_0 by a converting CPU load.
    dense: bool,
}

impl TensorMeta {
    fn elems(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Runtime bytes of tensors named in GGUF or Hugging Face convention.
fn runtime_bytes(tensors: &[TensorMeta], wp: WeightPath, embed: &str, output: &str) -> u64 {
    let tied = !tensors.iter().any(|t| t.name == output);
    tensors
        .iter()
        .map(|t| {
            let elems = t.elems();
            if t.name.ends_with("rope_freqs.weight") {
                0 // read once into the rotary tables
            } else if t.dims.len() < 2 {
                elems * 4
            } else if t.name == embed && !tied {
                // kept for row lookups; safetensors tables are quantized to Q8_0 when converting
                let dt = if converts_dense(wp, t) {
                    GgmlDType::Q8_0
                } else {
                    t.dtype
                };
                stored_bytes(dt, elems)
            } else if t.name == embed {
                // tied: the output projection, from the table as stored (no policy conversion);
                // dense safetensors tables are quantized to Q8_0 when converting
                let dt = if converts_dense(wp, t) {
                    GgmlDType::Q8_0
                } else {
                    t.dtype
                };
                wp.matrix_bytes(dt, elems)
            } else {
                let cols = *t.dims.last().unwrap_or(&0) as usize;
                let dt = if converts_dense(wp, t) {
                    GgmlDType::Q8_0
                } else {
                    wp.matrix_type(t.dtype, cols)
                };
                wp.matrix_bytes(dt, elems)
            }
        })
        .sum()
}

/// Safetensors matrices (read as dense F32) become Q8_0 on the converting CPU path when their
/// rows are whole blocks.
fn converts_dense(wp: WeightPath, t: &TensorMeta) -> bool {
    t.dense && wp.converts() && t.dims.last().is_some_and(|c| c % 32 == 0)
}

/// Bytes the weights of a GGUF file take once loaded on `wp`.
pub fn gguf_runtime_bytes(path: &Path, wp: WeightPath) -> Result<u64, String> {
    let (h, _) = crate::gguf::read(path).map_err(|e| e.to_string())?;
    let tensors: Vec<TensorMeta> = h
        .content
        .tensor_infos
        .iter()
        .map(|(name, i)| TensorMeta {
            name: name.clone(),
            dtype: i.ggml_dtype,
            dims: i.shape.dims().iter().map(|&d| d as u64).collect(),
            dense: false,
        })
        .collect();
    Ok(runtime_bytes(
        &tensors,
        wp,
        "token_embd.weight",
        "output.weight",
    ))
}

/// Bytes the weights of a safetensors directory take once loaded on `wp` (every tensor is read
/// as F32 first; the header alone is read here).
pub fn safetensors_runtime_bytes(dir: &Path, wp: WeightPath) -> Result<u64, String> {
    let mut tensors = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list: {e}"))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "safetensors") {
            continue;
        }
        for (name, dims) in safetensors_header(&p)? {
            tensors.push(TensorMeta {
                name,
                dtype: GgmlDType::F32,
                dims,
                dense: true,
            });
        }
    }
    Ok(runtime_bytes(
        &tensors,
        wp,
        "model.embed_tokens.weight",
        "lm_head.weight",
    ))
}

/// Tensor names and shapes of one safetensors file (its JSON header).
fn safetensors_header(path: &Path) -> Result<Vec<(String, Vec<u64>)>, String> {
    let err = |e: String| format!("{}: {e}", path.display());
    let mut f = File::open(path).map_err(|e| err(e.to_string()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| err(e.to_string()))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(err(format!("header of {len} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(|e| err(e.to_string()))?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&buf).map_err(|e| err(format!("bad header: {e}")))?;
    Ok(header
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, v)| {
            let dims = v["shape"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
                .unwrap_or_default();
            (k, dims)
        })
        .collect())
}

/// Bytes the weights of a model file (GGUF) or directory (safetensors) take once loaded.
pub fn model_runtime_bytes(path: &Path, wp: WeightPath) -> Result<u64, String> {
    if path.is_dir() {
        safetensors_runtime_bytes(path, wp)
    } else {
        gguf_runtime_bytes(path, wp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_decision_table_for_every_stored_type_and_path() {
        use GgmlDType as G;
        let path = |native_cpu, policy, own_kernels| WeightPath {
            native_cpu,
            policy,
            own_kernels,
        };
        let (auto, q8, stored) = (WeightPolicy::Auto, WeightPolicy::Q8_0, WeightPolicy::Stored);
        // (path, stored type, runs as)
        let table = [
            (path(true, auto, true), G::Q4_1, G::Q4_1),
            (path(true, auto, true), G::Q5_0, G::Q5_0),
            (path(true, auto, true), G::Q5_1, G::Q8_0),
            (path(true, auto, true), G::F16, G::Q8_0),
            (path(true, auto, true), G::BF16, G::Q8_0),
            (path(true, auto, true), G::Q8_0, G::Q8_0),
            (path(true, auto, true), G::Q4K, G::Q4K),
            (path(true, auto, true), G::Q5K, G::Q5K),
            (path(true, auto, true), G::Q6K, G::Q6K),
            (path(true, auto, true), G::F32, G::F32),
            (path(true, auto, false), G::Q4_1, G::Q8_0),
            (path(true, auto, false), G::Q5_0, G::Q8_0),
            (path(true, q8, true), G::Q4_1, G::Q8_0),
            (path(true, q8, true), G::Q5_0, G::Q8_0),
            (path(true, q8, true), G::Q4K, G::Q4K),
            (path(true, stored, true), G::Q4_1, G::Q4_1),
            (path(true, stored, true), G::F16, G::F16),
            // GPU or --kernels generic: always as stored
            (path(false, auto, true), G::Q4_1, G::Q4_1),
            (path(false, q8, true), G::F16, G::F16),
            (path(false, auto, false), G::Q5_1, G::Q5_1),
        ];
        for (wp, stored, runs) in table {
            assert_eq!(wp.runtime_type(stored), runs, "{wp:?} {stored:?}");
            assert_eq!(wp.matrix_type(stored, 64), runs, "{wp:?} {stored:?}");
            assert_eq!(
                wp.matrix_type(stored, 48),
                stored,
                "{wp:?} {stored:?}: 48 columns"
            );
        }
    }
}
