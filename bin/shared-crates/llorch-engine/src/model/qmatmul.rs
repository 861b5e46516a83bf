//! Quantized matrix multiplication for the CPU with AVX2 (Q4_1 and Q8_0 weights), written for
//! this engine.
//!
//! Candle runs Q4_1 (the SmolLM2 test model's weight type) through a scalar dot product, and
//! converting the weights to Q8_0 loses precision on blocks whose values sit far from zero.
//! These kernels keep the weights bit-exact and follow llama.cpp's arithmetic: activations are
//! quantized per 32-value block to 8 bits with an f32 scale and the block sum, and
//! `dot = d_w·d_x·Σ q_w·q_x (+ m_w·s_x for Q4_1)`. For several activation rows (prefill) each
//! unpacked weight block is reused across four rows. Work is split over the rayon pool by
//! output columns; rayon's workers sleep instead of spinning, so a busy machine slows the
//! engine down instead of collapsing it.

use anyhow::{ensure, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

const QK: usize = 32;

/// One Q4_1 block: scale, minimum (GGUF's f16 widened to f32 at load, so the inner loop does
/// no conversions), 32 4-bit values (low nibbles are values 0..16, high nibbles 16..32).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1 {
    d: f32,
    m: f32,
    qs: [u8; 16],
}

/// One Q8_0 block: scale (widened to f32 at load) and 32 signed 8-bit values.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0 {
    d: f32,
    qs: [i8; 32],
}

/// A weight block type the kernels run.
pub trait WeightBlock: Copy + Send + Sync + 'static {
    /// The GGUF type it reads.
    const DTYPE: GgmlDType;
    /// Bytes per block in GGUF.
    const BYTES: usize;
    /// Parse one block from its GGUF bytes.
    fn read(b: &[u8]) -> Self;
    /// Dot product of a weight row with one quantized activation row.
    fn dot1(w: &[Self], x: &[BlockQ8]) -> f32;
    /// Dot products of a weight row with four activation rows.
    fn dot4(w: &[Self], x: [&[BlockQ8]; 4]) -> [f32; 4];
    /// The block's 32 values as f32.
    fn dequant(&self, out: &mut [f32]);
}

impl WeightBlock for BlockQ4_1 {
    const DTYPE: GgmlDType = GgmlDType::Q4_1;
    const BYTES: usize = 20;
    fn read(b: &[u8]) -> Self {
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[4..20]);
        BlockQ4_1 {
            d: f16::from_le_bytes([b[0], b[1]]).to_f32(),
            m: f16::from_le_bytes([b[2], b[3]]).to_f32(),
            qs,
        }
    }
    fn dot1(w: &[Self], x: &[BlockQ8]) -> f32 {
        dot1(w, x)
    }
    fn dot4(w: &[Self], x: [&[BlockQ8]; 4]) -> [f32; 4] {
        dot4(w, x)
    }
    fn dequant(&self, out: &mut [f32]) {
        let (d, m) = (self.d, self.m);
        for j in 0..16 {
            out[j] = (self.qs[j] & 0x0F) as f32 * d + m;
            out[j + 16] = (self.qs[j] >> 4) as f32 * d + m;
        }
    }
}

impl WeightBlock for BlockQ8_0 {
    const DTYPE: GgmlDType = GgmlDType::Q8_0;
    const BYTES: usize = 34;
    fn read(b: &[u8]) -> Self {
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(&b[2..34]) {
            *q = v as i8;
        }
        BlockQ8_0 {
            d: f16::from_le_bytes([b[0], b[1]]).to_f32(),
            qs,
        }
    }
    fn dot1(w: &[Self], x: &[BlockQ8]) -> f32 {
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        ))]
        {
            // SAFETY: the target features are enabled for this whole build.
            unsafe { avx2::dot1_q8(w, x) }
        }
        #[cfg(not(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        )))]
        {
            scalar_dot_q8(w, x)
        }
    }
    fn dot4(w: &[Self], x: [&[BlockQ8]; 4]) -> [f32; 4] {
        [
            Self::dot1(w, x[0]),
            Self::dot1(w, x[1]),
            Self::dot1(w, x[2]),
            Self::dot1(w, x[3]),
        ]
    }
    fn dequant(&self, out: &mut [f32]) {
        let d = self.d;
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Reference arithmetic for Q8_0 (also the fallback on CPUs without AVX2).
#[cfg_attr(
    all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ),
    allow(dead_code)
)]
fn scalar_dot_q8(w: &[BlockQ8_0], x: &[BlockQ8]) -> f32 {
    w.iter()
        .zip(x)
        .map(|(b, a)| {
            b.d * a.d
                * b.qs
                    .iter()
                    .zip(&a.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum::<i32>() as f32
        })
        .sum()
}

/// One quantized activation block: scale, scale × Σq, 32 signed 8-bit values.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct BlockQ8 {
    qs: [i8; 32],
    d: f32,
    s: f32,
}

/// A quantized weight matrix `(n, k)` used as `y = x · Wᵀ`.
pub struct QMatrix<B: WeightBlock> {
    n: usize,
    k: usize,
    blocks: Vec<B>,
}

/// Q4_1 weights on the engine's kernel.
pub type Q4_1Matrix = QMatrix<BlockQ4_1>;
/// Q8_0 weights on the engine's kernel.
pub type Q8_0Matrix = QMatrix<BlockQ8_0>;

/// True when this CPU build can run the kernel.
pub fn available() -> bool {
    cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))
}

impl<B: WeightBlock> QMatrix<B> {
    /// Take the blocks of a `QTensor` of shape `(n, k)` and type `B::DTYPE`.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        ensure!(q.dtype() == B::DTYPE, "not a {:?} tensor", B::DTYPE);
        let (n, k) = q.shape().dims2()?;
        ensure!(k % QK == 0, "row length {k} is not a multiple of {QK}");
        let data = q.data()?;
        ensure!(
            data.len() == n * k / QK * B::BYTES,
            "{:?} data size mismatch",
            B::DTYPE
        );
        let blocks = data.chunks_exact(B::BYTES).map(B::read).collect();
        Ok(Self { n, k, blocks })
    }

    /// Read `n × k` weights of type `B::DTYPE` straight from a reader (a GGUF file positioned
    /// at the tensor's data), converting a slice at a time: no second copy of the tensor.
    pub fn from_reader(r: &mut impl std::io::Read, n: usize, k: usize) -> Result<Self> {
        ensure!(
            k.is_multiple_of(QK),
            "row length {k} is not a multiple of {QK}"
        );
        let total = n * k / QK;
        let mut blocks = Vec::with_capacity(total);
        let mut buf = vec![0u8; 4096 * B::BYTES];
        while blocks.len() < total {
            let count = (total - blocks.len()).min(4096);
            let bytes = &mut buf[..count * B::BYTES];
            r.read_exact(bytes)?;
            blocks.extend(bytes.chunks_exact(B::BYTES).map(B::read));
        }
        Ok(Self { n, k, blocks })
    }

    /// Rows `ids` dequantized, `(ids.len(), k)`: the embedding lookup of a tied table.
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        let kb = self.k / QK;
        let mut out = vec![0f32; ids.len() * self.k];
        for (r, &id) in ids.iter().enumerate() {
            let id = id as usize;
            ensure!(
                id < self.n,
                "token id {id} outside the embedding table ({} rows)",
                self.n
            );
            for (bi, b) in self.blocks[id * kb..(id + 1) * kb].iter().enumerate() {
                let o = r * self.k + bi * QK;
                b.dequant(&mut out[o..o + QK]);
            }
        }
        Ok(Tensor::from_vec(out, (ids.len(), self.k), &Device::Cpu)?)
    }

    /// Stack matrices with the same `k` along the output axis.
    pub fn concat(parts: Vec<QMatrix<B>>) -> Result<Self> {
        let k = parts.first().map(|p| p.k).unwrap_or(0);
        ensure!(
            parts.iter().all(|p| p.k == k),
            "Q4_1 concat: different row lengths"
        );
        let n = parts.iter().map(|p| p.n).sum();
        let blocks = parts.into_iter().flat_map(|p| p.blocks).collect();
        Ok(Self { n, k, blocks })
    }

    /// `x` is `(m, k)` (or `(k,)`); returns `(m, n)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        ensure!(
            k == self.k,
            "Q4_1 matmul: input has {k} columns, weights {}",
            self.k
        );
        let m = x.elem_count() / k;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let kb = k / QK;
        let mut qx = vec![
            BlockQ8 {
                qs: [0; 32],
                d: 0.0,
                s: 0.0
            };
            m * kb
        ];
        qx.par_chunks_mut(kb)
            .zip(xs.par_chunks(k))
            .for_each(|(dst, src)| quantize_row(src, dst));
        let mut out = vec![0f32; m * self.n];
        // Parallel over output columns; each task writes its own columns of every row.
        let cols_per_task = 16usize;
        let out_ptr = SendPtr(out.as_mut_ptr());
        let n = self.n;
        (0..n.div_ceil(cols_per_task))
            .into_par_iter()
            .for_each(|t| {
                let p = &out_ptr;
                for j in t * cols_per_task..((t + 1) * cols_per_task).min(n) {
                    let w = &self.blocks[j * kb..(j + 1) * kb];
                    let mut i = 0;
                    while i + 4 <= m {
                        let r = B::dot4(
                            w,
                            [
                                &qx[i * kb..],
                                &qx[(i + 1) * kb..],
                                &qx[(i + 2) * kb..],
                                &qx[(i + 3) * kb..],
                            ],
                        );
                        for (o, v) in r.iter().enumerate() {
                            // SAFETY: column j belongs to this task only; (i + o, j) is in bounds.
                            unsafe { *p.0.add((i + o) * n + j) = *v };
                        }
                        i += 4;
                    }
                    while i < m {
                        let v = B::dot1(w, &qx[i * kb..(i + 1) * kb]);
                        // SAFETY: as above.
                        unsafe { *p.0.add(i * n + j) = v };
                        i += 1;
                    }
                }
            });
        let mut shape = dims;
        *shape.last_mut().unwrap() = self.n;
        Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
    }
}

struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint elements (see `forward`).
unsafe impl Sync for SendPtr {}

fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    for (b, src) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = src.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(src) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        b.d = d;
        b.s = d * sum as f32;
    }
}

fn dot1(w: &[BlockQ4_1], x: &[BlockQ8]) -> f32 {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the target features are enabled for this whole build.
        unsafe { avx2::dot1(w, x) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        scalar_dot(w, x)
    }
}

fn dot4(w: &[BlockQ4_1], x: [&[BlockQ8]; 4]) -> [f32; 4] {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the target features are enabled for this whole build.
        unsafe { avx2::dot4(w, x) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        [
            scalar_dot(w, x[0]),
            scalar_dot(w, x[1]),
            scalar_dot(w, x[2]),
            scalar_dot(w, x[3]),
        ]
    }
}

/// Reference arithmetic (also the fallback on CPUs without AVX2).
#[cfg_attr(
    all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ),
    allow(dead_code)
)]
fn scalar_dot(w: &[BlockQ4_1], x: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in w.iter().zip(x) {
        let mut s = 0i32;
        for j in 0..16 {
            s += (b.qs[j] & 0x0F) as i32 * a.qs[j] as i32;
            s += (b.qs[j] >> 4) as i32 * a.qs[j + 16] as i32;
        }
        acc += b.d * a.d * s as f32 + b.m * a.s;
    }
    acc
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx2 {
    //! Every function here only reads the blocks it is given and uses AVX2/FMA, which the
    //! whole build enables (`-C target-cpu=native` on an AVX2 machine).
    use std::arch::x86_64::*;

    use super::{BlockQ4_1, BlockQ8, BlockQ8_0};

    #[inline(always)]
    unsafe fn unpack(b: &BlockQ4_1) -> __m256i {
        unsafe {
            let q = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
            let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
            _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
        }
    }

    /// Σ u8 × i8 over the block, as 8 partial sums in f32 lanes.
    #[inline(always)]
    unsafe fn block_sum(w: __m256i, a: &BlockQ8) -> __m256 {
        unsafe {
            let qa = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            _mm256_cvtepi32_ps(dot_u8_i8(w, qa))
        }
    }

    /// Sums of 4 adjacent u8 × i8 products: one VNNI instruction where the CPU has it.
    #[inline(always)]
    unsafe fn dot_u8_i8(u: __m256i, i: __m256i) -> __m256i {
        #[cfg(all(target_feature = "avx512vnni", target_feature = "avx512vl"))]
        unsafe {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, i)
        }
        #[cfg(not(all(target_feature = "avx512vnni", target_feature = "avx512vl")))]
        unsafe {
            // |255·127·2| may saturate i16 only for Q8_0's |w| = 128, which quantization never makes
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, i), _mm256_set1_epi16(1))
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }

    pub unsafe fn dot1(w: &[BlockQ4_1], x: &[BlockQ8]) -> f32 {
        unsafe {
            let mut acc = _mm256_setzero_ps();
            let mut mins = 0f32;
            for (b, a) in w.iter().zip(x) {
                let d = _mm256_set1_ps(b.d * a.d);
                acc = _mm256_fmadd_ps(d, block_sum(unpack(b), a), acc);
                mins += b.m * a.s;
            }
            hsum(acc) + mins
        }
    }

    pub unsafe fn dot1_q8(w: &[BlockQ8_0], x: &[BlockQ8]) -> f32 {
        unsafe {
            let mut acc = _mm256_setzero_ps();
            for (b, a) in w.iter().zip(x) {
                let qw = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
                let qa = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                // |w| as unsigned, sign moved onto x: the u8 × i8 product needs one unsigned operand
                let s = _mm256_cvtepi32_ps(dot_u8_i8(
                    _mm256_sign_epi8(qw, qw),
                    _mm256_sign_epi8(qa, qw),
                ));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(b.d * a.d), s, acc);
            }
            hsum(acc)
        }
    }

    pub unsafe fn dot4(w: &[BlockQ4_1], x: [&[BlockQ8]; 4]) -> [f32; 4] {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut mins = [0f32; 4];
            for (bi, b) in w.iter().enumerate() {
                let (bd, bm) = (b.d, b.m);
                let qw = unpack(b);
                for r in 0..4 {
                    let a = &x[r][bi];
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(bd * a.d), block_sum(qw, a), acc[r]);
                    mins[r] += bm * a.s;
                }
            }
            [
                hsum(acc[0]) + mins[0],
                hsum(acc[1]) + mins[1],
                hsum(acc[2]) + mins[2],
                hsum(acc[3]) + mins[3],
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact reference: dequantized weights times the kernel's own quantized activations.
    fn reference(deq_w: &[Vec<f32>], xs: &[Vec<f32>]) -> Vec<Vec<f32>> {
        xs.iter()
            .map(|x| {
                let mut qx = vec![
                    BlockQ8 {
                        qs: [0; 32],
                        d: 0.0,
                        s: 0.0
                    };
                    x.len() / QK
                ];
                quantize_row(x, &mut qx);
                let xq: Vec<f32> = qx
                    .iter()
                    .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
                    .collect();
                deq_w
                    .iter()
                    .map(|w| w.iter().zip(&xq).map(|(a, b)| a * b).sum())
                    .collect()
            })
            .collect()
    }

    fn check<B: WeightBlock>(dtype: GgmlDType) {
        let (n, k, m) = (40, 96, 6);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 0.7)
            .collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, dtype).unwrap();
        let deq = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 104729) % 997) as f32 / 400.0 - 1.2)
            .collect();
        let xt = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
        let want = reference(&deq, &xt.to_vec2::<f32>().unwrap());
        let got = QMatrix::<B>::from_qtensor(&q)
            .unwrap()
            .forward(&xt)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (gr, wr) in got.iter().zip(&want) {
            for (g, w) in gr.iter().zip(wr) {
                assert!(
                    (g - w).abs() < 1e-3 * (1.0 + w.abs()),
                    "{dtype:?}: {g} vs {w}"
                );
            }
        }
        // embedding rows equal the dequantized weights
        let rows = QMatrix::<B>::from_qtensor(&q)
            .unwrap()
            .rows(&[3, 0])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(rows[0], deq[3]);
        assert_eq!(rows[1], deq[0]);
    }

    #[test]
    fn q4_1_kernel_is_exact() {
        check::<BlockQ4_1>(GgmlDType::Q4_1);
    }

    #[test]
    fn q8_0_kernel_is_exact() {
        check::<BlockQ8_0>(GgmlDType::Q8_0);
    }
}
