//! Q4_1 weights: 32 values per block, `d·q + m` with 4-bit `q`.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::{BlockQ8, WeightBlock};

/// One Q4_1 block: scale, minimum (GGUF's f16 widened to f32 at load, so the inner loop does
/// no conversions), 32 4-bit values (low nibbles are values 0..16, high nibbles 16..32).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1 {
    d: f32,
    m: f32,
    qs: [u8; 16],
}

impl WeightBlock for BlockQ4_1 {
    const DTYPE: GgmlDType = GgmlDType::Q4_1;
    const BYTES: usize = 20;
    const QK: usize = 32;
    type Act = BlockQ8;

    fn read(b: &[u8]) -> Self {
        BlockQ4_1 {
            d: f16::from_le_bytes([b[0], b[1]]).to_f32(),
            m: f16::from_le_bytes([b[2], b[3]]).to_f32(),
            qs: b[4..20].try_into().expect("block size"),
        }
    }

    fn dequant(&self, out: &mut [f32]) {
        let (d, m) = (self.d, self.m);
        for j in 0..16 {
            out[j] = (self.qs[j] & 0x0F) as f32 * d + m;
            out[j + 16] = (self.qs[j] >> 4) as f32 * d + m;
        }
    }

    /// `Σ d_w·d_x·Σq_w·q_x + m_w·s_x` over the blocks.
    fn dot_scalar(w: &[Self], x: &[BlockQ8]) -> f32 {
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

    kernel_items!(Q4_1);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::simd::{dot_u8_i8, hsum, load, nibbles};
    use super::{BlockQ4_1, BlockQ8};

    /// One weight row against `R` activation rows; each block is unpacked once.
    #[target_feature(enable = "avx2,fma")]
    pub fn dot<const R: usize>(w: &[BlockQ4_1], x: [&[BlockQ8]; R]) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [0f32; R];
        for (bi, b) in w.iter().enumerate() {
            let qw = nibbles(&b.qs);
            for r in 0..R {
                let a = &x[r][bi];
                let s = _mm256_cvtepi32_ps(dot_u8_i8(qw, load(&a.qs)));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(b.d * a.d), s, acc[r]);
                mins[r] += b.m * a.s;
            }
        }
        std::array::from_fn(|r| hsum(acc[r]) + mins[r])
    }
}
