//! Q5_0 weights: 32 values per block, `d·(q - 16)` with 5-bit `q` (4 bits in `qs`, the fifth
//! in one bit of `qh`). Gemma 3's Q4_K_M files use it for rows of 640 values (not a multiple
//! of the k-quants' 256).

use candle_core::quantized::GgmlDType;
use half::f16;

use super::{BlockQ8, WeightBlock};

/// One Q5_0 block: scale (widened to f32 at load), the fifth bits (bit `i` for value `i`), and
/// the low 4 bits (low nibbles are values 0..16, high nibbles 16..32).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_0 {
    d: f32,
    qh: u32,
    qs: [u8; 16],
}

impl BlockQ5_0 {
    /// Value `i` as a signed integer in -16..16.
    fn q(&self, i: usize) -> i32 {
        let lo = if i < 16 {
            self.qs[i] & 0x0F
        } else {
            self.qs[i - 16] >> 4
        };
        (lo as i32 | (((self.qh >> i) & 1) << 4) as i32) - 16
    }
}

impl WeightBlock for BlockQ5_0 {
    const DTYPE: GgmlDType = GgmlDType::Q5_0;
    const BYTES: usize = 22;
    const QK: usize = 32;
    type Act = BlockQ8;

    fn read(b: &[u8]) -> Self {
        BlockQ5_0 {
            d: f16::from_le_bytes([b[0], b[1]]).to_f32(),
            qh: u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
            qs: b[6..22].try_into().expect("block size"),
        }
    }

    fn dequant(&self, out: &mut [f32]) {
        for (i, o) in out[..32].iter_mut().enumerate() {
            *o = self.q(i) as f32 * self.d;
        }
    }

    /// `Σ d_w·d_x·Σ(q_w - 16)·q_x` over the blocks.
    fn dot_scalar(w: &[Self], x: &[BlockQ8]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(b, a)| {
                let s: i32 = (0..32).map(|i| b.q(i) * a.qs[i] as i32).sum();
                b.d * a.d * s as f32
            })
            .sum()
    }

    kernel_items!(Q5_0);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::simd::{dot_i8_i8, hsum, load, nibbles};
    use super::{BlockQ5_0, BlockQ8};

    /// The 32 bits of `qh` as bytes: 0x10 where bit `i` is set, else 0.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fifth_bits(qh: u32) -> __m256i {
        // byte i takes byte i/8 of qh; OR-ing every bit but bit i%8 leaves all ones iff bit i is set
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(qh as i32),
            _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0,
            ),
        );
        let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
        let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1));
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }

    /// One weight row against `R` activation rows; each block is unpacked once.
    #[target_feature(enable = "avx2,fma")]
    pub fn dot<const R: usize>(w: &[BlockQ5_0], x: [&[BlockQ8]; R]) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        for (bi, b) in w.iter().enumerate() {
            let q = _mm256_or_si256(nibbles(&b.qs), fifth_bits(b.qh));
            let qw = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
            for r in 0..R {
                let a = &x[r][bi];
                let s = _mm256_cvtepi32_ps(dot_i8_i8(qw, load(&a.qs)));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(b.d * a.d), s, acc[r]);
            }
        }
        std::array::from_fn(|r| hsum(acc[r]))
    }
}
