//! The decoder-only transformer forward pass (Llama family, Qwen2, Phi-3, Gemma 3).
//!
//! Shared, read-only weights live in [`Transformer`]; everything that belongs to one sequence
//! (its KV cache and position) lives in [`KvCache`], so many sequences can share one model.

use std::sync::Arc;

use anyhow::Result;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor, D};

use super::config::{Architecture, ModelConfig};
use super::kv::KvCache;
use super::rope::Rope;
use super::weights::{tensor_bytes, Matrix, Weights};

mod segments;
pub use segments::Segment;

struct Linear {
    w: Matrix,
    b: Option<Tensor>,
}

impl Linear {
    fn load(w: &mut Weights, name: &str) -> Result<Self> {
        let weight = w.matrix(&format!("{name}.weight"))?;
        let bias_name = format!("{name}.bias");
        let b = if w.contains(&bias_name) {
            Some(w.vector(&bias_name)?)
        } else {
            None
        };
        Ok(Self { w: weight, b })
    }

    /// Fuse linears that read the same input into one (weights and biases stacked) on the
    /// native CPU path; the parts come back unchanged on the generic path, when their weight
    /// types differ or when only some have biases.
    fn fuse(parts: Vec<Linear>, native: bool) -> Result<std::result::Result<Linear, Vec<Linear>>> {
        let with_bias = parts.iter().filter(|l| l.b.is_some()).count();
        let fusable = native
            && (with_bias == 0 || with_bias == parts.len())
            && Matrix::can_fuse(parts.iter().map(|l| &l.w));
        if !fusable {
            return Ok(Err(parts));
        }
        let b = if with_bias > 0 {
            let bs: Vec<Tensor> = parts
                .iter()
                .map(|l| l.b.clone().expect("checked"))
                .collect();
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        Ok(Ok(Linear {
            w: Matrix::fuse(parts.into_iter().map(|l| l.w).collect())?,
            b,
        }))
    }

    fn bytes(&self) -> usize {
        self.w.allocated_bytes() + self.b.as_ref().map_or(0, tensor_bytes)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.w.forward(x)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

enum Attn {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

enum Mlp {
    GateUp { gate: Linear, up: Linear },
    FusedGateUp(Linear),
}

struct Layer {
    attn_norm: Tensor,
    attn: Attn,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    o: Linear,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    mlp: Mlp,
    down: Linear,
    post_ffn_norm: Option<Tensor>,
    local: bool,
}

/// Which logits the forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's (decode, or prefill without prompt log-probs).
    Last,
    /// Every position's (prompt log-probs, teacher forcing).
    All,
}

/// A loaded model: weights and rotary tables, shared by every sequence.
pub struct Transformer {
    pub cfg: ModelConfig,
    /// The embedding table, unless it is tied to (and looked up in) the output projection.
    embed: Option<Arc<QTensor>>,
    embed_scale: Option<f64>,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Matrix,
    rope_global: Rope,
    rope_local: Option<Rope>,
    /// Longest context this instance serves (rotary tables are sized to it).
    pub max_context: usize,
    device: Device,
    /// The engine's own CPU path (attention kernel, F16 cache, fused projections); false on a
    /// GPU and with `Kernels::Generic`, which run candle's masked attention and an F32 cache.
    native: bool,
}

impl Transformer {
    /// Build from weights named in GGUF convention (safetensors names are mapped by the loader).
    pub fn load(
        cfg: ModelConfig,
        w: &mut Weights,
        names: &dyn Fn(&str) -> String,
        max_context: usize,
    ) -> Result<Self> {
        let device = w.device().clone();
        let native = w.native();
        let out_name = names("output.weight");
        let emb_name = names("token_embd.weight");
        // A tied table that runs on the engine's kernel is read once, straight into it.
        let tied_own = if w.contains(&out_name) {
            None
        } else {
            w.own_matrix(&emb_name)?
        };
        let mut embed = match tied_own {
            Some(_) => None,
            None => Some(w.embedding(&emb_name)?),
        };
        let gemma = cfg.arch == Architecture::Gemma3;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| names(&format!("blk.{i}.{s}"));
            let opt = |w: &mut Weights, s: &str| -> Result<Option<Tensor>> {
                let n = p(s);
                Ok(if w.contains(&n) {
                    Some(w.vector(&n)?)
                } else {
                    None
                })
            };
            let attn = if cfg.arch == Architecture::Phi3 {
                Attn::Fused(Linear::load(w, &p("attn_qkv"))?)
            } else {
                let parts = vec![
                    Linear::load(w, &p("attn_q"))?,
                    Linear::load(w, &p("attn_k"))?,
                    Linear::load(w, &p("attn_v"))?,
                ];
                // one matmul for q, k and v when the types allow it (the same layout as Phi-3's)
                match Linear::fuse(parts, native)? {
                    Ok(l) => Attn::Fused(l),
                    Err(mut p) => {
                        let (v, k, q) = (p.pop().unwrap(), p.pop().unwrap(), p.pop().unwrap());
                        Attn::Separate { q, k, v }
                    }
                }
            };
            let mlp = if cfg.arch == Architecture::Phi3 {
                Mlp::FusedGateUp(Linear::load(w, &p("ffn_up"))?)
            } else {
                match Linear::fuse(
                    vec![
                        Linear::load(w, &p("ffn_gate"))?,
                        Linear::load(w, &p("ffn_up"))?,
                    ],
                    native,
                )? {
                    Ok(l) => Mlp::FusedGateUp(l),
                    Err(mut p) => {
                        let (up, gate) = (p.pop().unwrap(), p.pop().unwrap());
                        Mlp::GateUp { gate, up }
                    }
                }
            };
            layers.push(Layer {
                attn_norm: w.vector(&p("attn_norm.weight"))?,
                attn,
                q_norm: opt(w, "attn_q_norm.weight")?,
                k_norm: opt(w, "attn_k_norm.weight")?,
                o: Linear::load(w, &p("attn_output"))?,
                post_attn_norm: opt(w, "post_attention_norm.weight")?,
                ffn_norm: w.vector(&p("ffn_norm.weight"))?,
                mlp,
                down: Linear::load(w, &p("ffn_down"))?,
                post_ffn_norm: opt(w, "post_ffw_norm.weight")?,
                local: cfg.is_local_layer(i),
            });
        }
        let norm = w.vector(&names("output_norm.weight"))?;
        let output = if let Some(m) = tied_own {
            m
        } else if w.contains(&out_name) {
            w.matrix(&out_name)?
        } else {
            // tied: the output projection is the embedding table
            let q = Arc::try_unwrap(embed.take().expect("embedding loaded"))
                .map_err(|_| anyhow::anyhow!("embedding shared"))?;
            Matrix::from_qtensor(q, w.requant())?
        };
        // Llama 3.1+ GGUFs carry their frequency divisors as a tensor; config.json's in `cfg`
        let factors = match names("rope_freqs.weight") {
            n if w.contains(&n) => Some(w.vector(&n)?.to_device(&Device::Cpu)?.to_vec1::<f32>()?),
            _ => cfg.rope_freq_factors.clone(),
        };
        let (hd, theta) = (cfg.head_dim, cfg.rope_theta);
        let rope_global = Rope::new(
            hd,
            theta,
            cfg.rope_scale,
            factors.as_deref(),
            max_context,
            &device,
        )?;
        let rope_local = if gemma {
            Some(Rope::new(
                hd,
                cfg.rope_local_theta,
                1.0,
                None,
                max_context,
                &device,
            )?)
        } else {
            None
        };
        Ok(Self {
            embed_scale: gemma.then(|| (cfg.n_embd as f64).sqrt()),
            cfg,
            embed,
            layers,
            norm,
            output,
            rope_global,
            rope_local,
            max_context,
            device,
            native,
        })
    }

    /// A fresh, empty KV cache for one sequence that will hold at most `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        KvCache::new(
            self.cfg.n_layer,
            self.cfg.n_kv_head,
            self.cfg.head_dim,
            capacity.min(self.max_context),
            &self.device,
            self.kv_dtype(),
        )
    }

    /// Bytes the loaded model holds on its device: every weight matrix and vector as it runs
    /// (after load-time conversions) and the rotary tables. KV caches are not included.
    pub fn allocated_bytes(&self) -> usize {
        let opt = |t: &Option<Tensor>| t.as_ref().map_or(0, tensor_bytes);
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let attn = match &l.attn {
                    Attn::Separate { q, k, v } => q.bytes() + k.bytes() + v.bytes(),
                    Attn::Fused(qkv) => qkv.bytes(),
                };
                let mlp = match &l.mlp {
                    Mlp::GateUp { gate, up } => gate.bytes() + up.bytes(),
                    Mlp::FusedGateUp(l) => l.bytes(),
                };
                let norms = [&l.q_norm, &l.k_norm, &l.post_attn_norm, &l.post_ffn_norm];
                tensor_bytes(&l.attn_norm)
                    + tensor_bytes(&l.ffn_norm)
                    + norms.into_iter().map(opt).sum::<usize>()
                    + attn
                    + mlp
                    + l.o.bytes()
                    + l.down.bytes()
            })
            .sum();
        let ropes = [Some(&self.rope_global), self.rope_local.as_ref()]
            .into_iter()
            .flatten();
        layers
            + self.embed.as_ref().map_or(0, |q| q.storage_size_in_bytes())
            + tensor_bytes(&self.norm)
            + self.output.allocated_bytes()
            + ropes
                .map(|r| tensor_bytes(&r.cos) + tensor_bytes(&r.sin))
                .sum::<usize>()
    }

    /// The KV cache's element type: F16 on the native CPU path, F32 on the generic path.
    pub fn kv_dtype(&self) -> DType {
        if self.native {
            DType::F16
        } else {
            DType::F32
        }
    }

    /// Whether the engine's own CPU path runs this model (see `Kernels`).
    pub fn is_native(&self) -> bool {
        self.native
    }

    /// The compute device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn rms(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        super::profile::time("other: rms norm", || {
            Ok(candle_nn::ops::rms_norm(x, w, self.cfg.rms_eps as f32)?)
        })
    }

    /// Run `ids` at absolute positions `cache.len()..` through the model, appending to the
    /// cache. Returns F32 logits of shape `(1, vocab)` or `(ids.len(), vocab)`.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Tensor> {
        let t = super::profile::start();
        let out = self.forward_inner(ids, cache, logits);
        super::profile::record(t, || "forward (whole)".into());
        out
    }

    fn forward_inner(&self, ids: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Tensor> {
        let mut seg = [Segment { ids, cache, logits }];
        Ok(self.forward_segments(&mut seg)?.pop().expect("one segment"))
    }

    /// One decode step for several sequences at once: `ids[b]` goes to `caches[b]` at that
    /// cache's next position (see [`Transformer::forward_segments`]). Returns F32 logits
    /// `(ids.len(), vocab)`, row `b` for sequence `b`.
    pub fn forward_batch(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        anyhow::ensure!(
            ids.len() == caches.len(),
            "forward_batch: {} ids for {} caches",
            ids.len(),
            caches.len()
        );
        let mut segs: Vec<Segment<'_>> = ids
            .iter()
            .zip(caches.iter_mut())
            .map(|(id, cache)| Segment {
                ids: std::slice::from_ref(id),
                cache,
                logits: Logits::Last,
            })
            .collect();
        Ok(Tensor::cat(&self.forward_segments(&mut segs)?, 0)?)
    }

    /// Token embeddings `(n, d)`, scaled for Gemma.
    fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let ids_t = Tensor::new(ids, &self.device)?;
        let x = match &self.embed {
            Some(table) => table.embedding(&ids_t)?,
            None => self.output.embedding(ids, &ids_t)?,
        };
        Ok(match self.embed_scale {
            Some(s) => (x * s)?,
            None => x,
        })
    }

    /// Add the attention output to the residual stream, then the MLP block.
    fn residual_and_mlp(&self, layer: &Layer, x: Tensor, a: Tensor) -> Result<Tensor> {
        let a = match &layer.post_attn_norm {
            Some(w) => self.rms(&a, w)?,
            None => a,
        };
        let x = (x + a)?;
        let h = self.rms(&x, &layer.ffn_norm)?;
        let f = self.mlp(layer, &h)?;
        let f = match &layer.post_ffn_norm {
            Some(w) => self.rms(&f, w)?,
            None => f,
        };
        Ok((x + f)?)
    }

    /// Final norm and output projection: F32 logits `(rows, vocab)`.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.rms(x, &self.norm)?;
        Ok(self.output.forward(&x)?.to_dtype(DType::F32)?)
    }

    fn mlp(&self, layer: &Layer, h: &Tensor) -> Result<Tensor> {
        let gemma = self.cfg.arch == Architecture::Gemma3;
        let gated = |g: &Tensor, u: &Tensor| -> Result<Tensor> {
            super::profile::time("other: gated activation", || {
                if self.native {
                    let act = if gemma {
                        super::vecmath::Activation::GeluTanh
                    } else {
                        super::vecmath::Activation::Silu
                    };
                    return super::vecmath::gated(g, u, act);
                }
                let a = if gemma {
                    g.gelu()?
                } else {
                    candle_nn::ops::silu(g)?
                };
                Ok((a * u)?)
            })
        };
        let y = match &layer.mlp {
            Mlp::GateUp { gate, up } => gated(&gate.forward(h)?, &up.forward(h)?)?,
            Mlp::FusedGateUp(l) => {
                let gu = l.forward(h)?;
                let ff = self.cfg.n_ff;
                gated(
                    &gu.narrow(D::Minus1, 0, ff)?,
                    &gu.narrow(D::Minus1, ff, ff)?,
                )?
            }
        };
        layer.down.forward(&y)
    }

    /// Additive causal mask `(n, pos + n)`: query `i` (absolute `pos + i`) sees keys `<= pos + i`
    /// (and, with a window, keys `> pos + i - window`).
    fn mask(&self, n: usize, pos: usize, window: Option<usize>) -> Result<Tensor> {
        let t = pos + n;
        let mut m = vec![0f32; n * t];
        for i in 0..n {
            let q = pos + i;
            for (j, v) in m[i * t..(i + 1) * t].iter_mut().enumerate() {
                let visible = j <= q && window.is_none_or(|w| j + w > q);
                if !visible {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        Ok(Tensor::from_vec(m, (n, t), &self.device)?)
    }

    /// The q, k and v projections of `h` `(rows, d)`: `(rows, heads*hd)` each.
    fn qkv(&self, layer: &Layer, h: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (hd, nh, nkv) = (self.cfg.head_dim, self.cfg.n_head, self.cfg.n_kv_head);
        Ok(match &layer.attn {
            Attn::Separate { q, k, v } => (q.forward(h)?, k.forward(h)?, v.forward(h)?),
            Attn::Fused(l) => {
                let qkv = l.forward(h)?;
                (
                    qkv.narrow(D::Minus1, 0, nh * hd)?,
                    qkv.narrow(D::Minus1, nh * hd, nkv * hd)?,
                    qkv.narrow(D::Minus1, (nh + nkv) * hd, nkv * hd)?,
                )
            }
        })
    }

    /// Attention of one sequence's `n` new positions (`pos..pos+n`), given their q/k/v rows:
    /// rotary embedding, cache append, masked softmax over the cache. Returns `(n, heads*hd)`,
    /// before the output projection.
    fn attend(
        &self,
        li: usize,
        layer: &Layer,
        (q, k, v): (Tensor, Tensor, Tensor),
        pos: usize,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let n = q.dim(0)?;
        let (hd, nh, nkv) = (cfg.head_dim, cfg.n_head, cfg.n_kv_head);
        // (n, heads*hd) -> (1, heads, n, hd)
        let to_heads = |t: Tensor, heads: usize| -> Result<Tensor> {
            Ok(t.reshape((n, heads, hd))?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)?)
        };
        let (mut q, mut k, v) = super::profile::time("other: split heads", || -> Result<_> {
            Ok((to_heads(q, nh)?, to_heads(k, nkv)?, to_heads(v, nkv)?))
        })?;
        if let Some(w) = &layer.q_norm {
            q = self.rms(&q, w)?;
        }
        if let Some(w) = &layer.k_norm {
            k = self.rms(&k, w)?;
        }
        let rope = if layer.local {
            self.rope_local.as_ref().unwrap_or(&self.rope_global)
        } else {
            &self.rope_global
        };
        let cos = rope.cos.narrow(0, pos, n)?;
        let sin = rope.sin.narrow(0, pos, n)?;
        let (q, k) = super::profile::time("other: rotary", || -> Result<_> {
            Ok(if cfg.rope_interleaved {
                (
                    candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
                )
            } else {
                (
                    candle_nn::rotary_emb::rope(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope(&k, &cos, &sin)?,
                )
            })
        })?;
        let (k_all, v_all) = super::profile::time("other: kv append", || {
            cache.append(li, &k.squeeze(0)?, &v.squeeze(0)?, pos)
        })?; // (nkv, t, hd)
        if self.native {
            let window = if layer.local {
                cfg.sliding_window
            } else {
                None
            };
            let scale = cfg.attn_scale as f32;
            let t = super::profile::start();
            let out =
                super::attention::attend_cpu(&q.squeeze(0)?, &k_all, &v_all, pos, scale, window);
            super::profile::record(t, || "attention (softmax·V, cpu kernel)".into());
            return out;
        }
        let t = pos + n;
        // Grouped-query attention without copying K/V per head: query heads sharing one KV head
        // are stacked along the row axis, (nkv, rep * n, hd).
        let rep = nh / nkv;
        let q = q.squeeze(0)?.reshape((nkv, rep * n, hd))?;
        let k_t = k_all.transpose(1, 2)?;
        let (k_t, v_all) = if self.native {
            (k_t, v_all)
        } else {
            (k_t.contiguous()?, v_all.contiguous()?)
        };
        let mut scores = (q.matmul(&k_t)? * cfg.attn_scale)?; // (nkv, rep*n, t)
        if let Some(m) = mask {
            scores = scores
                .reshape((nkv, rep, n, t))?
                .broadcast_add(m)?
                .reshape((nkv, rep * n, t))?;
        } else if let (true, Some(w)) = (layer.local, cfg.sliding_window) {
            if t > w {
                // decode step in a sliding-window layer: only the last `w` keys are visible
                let start = t - w;
                let mut m = vec![0f32; t];
                m[..start].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
                let m = Tensor::from_vec(m, (1, 1, t), &self.device)?;
                scores = scores.broadcast_add(&m)?;
            }
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v_all)?; // (nkv, rep*n, hd)
        Ok(out
            .reshape((nh, n, hd))?
            .transpose(0, 1)?
            .reshape((n, nh * hd))?)
    }
}
