//! Q8_0 weights: 32 values per block, `d·q` with signed 8-bit `q`.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::{BlockQ8, WeightBlock};

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

    kernel_items!(Q8_0);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::simd::{dot_i8_i8, hsum, load};
    use super::{BlockQ8, BlockQ8_0};

    /// One weight row against `R` activation rows.
    #[target_feature(enable = "avx2,fma")]
    pub fn dot<const R: usize>(w: &[BlockQ8_0], x: [&[BlockQ8]; R]) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        for (bi, b) in w.iter().enumerate() {
            let qw = load(&b.qs);
            for r in 0..R {
                let a = &x[r][bi];
                let s = _mm256_cvtepi32_ps(dot_i8_i8(qw, load(&a.qs)));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(b.d * a.d), s, acc[r]);
            }
        }
        std::array::from_fn(|r| hsum(acc[r]))
    }
}
