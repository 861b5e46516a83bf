//! Q8_0 weights: 32 values per block, `d·q` with signed 8-bit `q`.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::group::off;
use super::{BlockQ8, RowGroup, WeightBlock};

/// One Q8_0 block: scale (widened to f32 at load) and 32 signed 8-bit values.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0 {
    d: f32,
    qs: [i8; 32],
}

impl WeightBlock for BlockQ8_0 {
    const DTYPE: GgmlDType = GgmlDType::Q8_0;
    const BYTES: usize = 34;
    const QK: usize = 32;
    type Act = BlockQ8;

    fn read(b: &[u8]) -> Self {
        BlockQ8_0 {
            d: f16::from_le_bytes([b[0], b[1]]).to_f32(),
            qs: std::array::from_fn(|i| b[2 + i] as i8),
        }
    }

    fn dequant(&self, out: &mut [f32]) {
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * self.d;
        }
    }

    /// `Σ d_w·d_x·Σq_w·q_x` over the blocks.
    fn dot_scalar(w: &[Self], x: &[BlockQ8]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(b, a)| {
                let s: i32 =
                    b.qs.iter()
                        .zip(&a.qs)
                        .map(|(&p, &q)| p as i32 * q as i32)
                        .sum();
                b.d * a.d * s as f32
            })
            .sum()
    }
}

/// Eight rows' Q8_0 blocks: `qs[32c + 4i + t]` is row `i`'s value `off(c) + t` plus 128 (its
/// sign bit flipped), an unsigned byte for the u8 × i8 products.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct GroupQ8_0 {
    d: [u16; 8],
    qs: [u8; 256],
}

impl RowGroup for GroupQ8_0 {
    type Block = BlockQ8_0;

    fn pack(rows: &[BlockQ8_0; 8]) -> Self {
        GroupQ8_0 {
            d: rows.map(|b| f16::from_f32(b.d).to_bits()),
            qs: std::array::from_fn(|j| {
                let (c, i, t) = (j / 32, (j % 32) / 4, j % 4);
                rows[i].qs[off(c) + t] as u8 ^ 0x80
            }),
        }
    }

    fn unpack(&self, i: usize) -> BlockQ8_0 {
        let mut qs = [0i8; 32];
        for c in 0..8 {
            for t in 0..4 {
                qs[off(c) + t] = (self.qs[32 * c + 4 * i + t] ^ 0x80) as i8;
            }
        }
        BlockQ8_0 {
            d: f16::from_bits(self.d[i]).to_f32(),
            qs,
        }
    }

    fn accumulate(&self, a: &BlockQ8, acc: &mut [f32; 8]) {
        for (i, acc) in acc.iter_mut().enumerate() {
            let b = self.unpack(i);
            let s: i32 =
                b.qs.iter()
                    .zip(&a.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            *acc = (s as f32).mul_add(b.d * a.d, *acc);
        }
    }

    group_kernel_items!();
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::group::off;
    use super::super::simd::{lanes, load_ph, load_u8, prefetch_ahead, quad};
    use super::{BlockQ8, GroupQ8_0};

    /// Whether the products go through VNNI (u8 × i8 into i32, no saturation).
    const VNNI: bool = cfg!(all(
        target_feature = "avx512vnni",
        target_feature = "avx512vl"
    ));

    /// `acc` plus the products of one chunk of weights `v` (stored plus 128) with activations `x`:
    /// with VNNI, of `v` itself (the caller subtracts `128·Σx`); without, of the signed values
    /// (maddubs would saturate on `v` up to 255).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn chunk(acc: __m256i, v: __m256i, x: __m256i) -> __m256i {
        if VNNI {
            super::super::simd::dot_acc(acc, v, x)
        } else {
            let w = _mm256_xor_si256(v, _mm256_set1_epi8(-128));
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }

    /// Eight weight rows against `R` activation rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dot<const R: usize>(w: &[GroupQ8_0], x: [&[BlockQ8]; R]) -> [[f32; 8]; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        for (bi, g) in w.iter().enumerate() {
            prefetch_ahead(g);
            let a: [&BlockQ8; R] = std::array::from_fn(|r| &x[r][bi]);
            let offset = |r: usize| if VNNI { -128 * a[r].sum } else { 0 };
            let mut s: [__m256i; R] = std::array::from_fn(|r| _mm256_set1_epi32(offset(r)));
            for c in 0..8 {
                let v = load_u8(&g.qs[32 * c..]);
                for r in 0..R {
                    s[r] = chunk(s[r], v, quad(&a[r].qs, off(c)));
                }
            }
            let d = load_ph(&g.d);
            for r in 0..R {
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(a[r].d));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r]), scale, acc[r]);
            }
        }
        std::array::from_fn(|r| lanes(acc[r]))
    }
}
