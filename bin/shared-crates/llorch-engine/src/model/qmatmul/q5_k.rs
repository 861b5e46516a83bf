//! Q5_K weights: super-blocks of 256 values in 8 sub-blocks of 32, value `d·sc·q - dmin·m`
//! with 5-bit `q` (a nibble in `qs` plus one bit in `qh`) and a 6-bit scale `sc` and minimum `m`
//! per sub-block (packed as in Q4_K).

use candle_core::quantized::GgmlDType;
use half::f16;

use super::q4_k::{super_block_dot, unpack_scales};
use super::{BlockQ8K, WeightBlock};

/// One Q5_K super-block. As for Q4_K the f16 scales are widened and the packed 6-bit scales and
/// minimums unpacked at load; `qs` and `qh` are as stored: value `i` takes its low four bits from
/// byte `i / 64 · 32 + i % 32` of `qs` (low nibble for `i % 64 < 32`, else high) and its fifth
/// bit from bit `i / 32` of `qh[i % 32]`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5K {
    d: f32,
    dmin: f32,
    sc: [u8; 8],
    m: [u8; 8],
    qh: [u8; 32],
    qs: [u8; 128],
}

impl BlockQ5K {
    /// Value `i` (0..256) as its 5-bit integer.
    fn q(&self, i: usize) -> i32 {
        let byte = self.qs[i / 64 * 32 + i % 32];
        let low = if i % 64 < 32 { byte & 0x0F } else { byte >> 4 };
        let high = (self.qh[i % 32] >> (i / 32)) & 1;
        (low | (high << 4)) as i32
    }
}

impl WeightBlock for BlockQ5K {
    const DTYPE: GgmlDType = GgmlDType::Q5K;
    const BYTES: usize = 176;
    const QK: usize = 256;
    type Act = BlockQ8K;

    fn read(b: &[u8]) -> Self {
        let (sc, m) = unpack_scales(&b[4..16]);
        BlockQ5K {
            d: f16::from_le_bytes([b[0], b[1]]).to_f32(),
            dmin: f16::from_le_bytes([b[2], b[3]]).to_f32(),
            sc,
            m,
            qh: b[16..48].try_into().expect("block size"),
            qs: b[48..176].try_into().expect("block size"),
        }
    }

    fn dequant(&self, out: &mut [f32]) {
        for (i, o) in out[..256].iter_mut().enumerate() {
            let j = i / 32;
            let (d, m) = (self.d * self.sc[j] as f32, self.dmin * self.m[j] as f32);
            *o = d * self.q(i) as f32 - m;
        }
    }

    fn dot_scalar(w: &[Self], x: &[BlockQ8K]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(b, a)| super_block_dot(b.d, b.dmin, &b.sc, &b.m, |i| b.q(i), a))
            .sum()
    }

    kernel_items!();
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::q4_k::avx2::super_block;
    use super::super::simd::{hsum, load_u8};
    use super::{BlockQ5K, BlockQ8K};

    /// One weight row against `R` activation rows; each super-block is unpacked once. Values
    /// are at most 31, so `maddubs` pairs (≤ 2·31·127) cannot saturate.
    #[target_feature(enable = "avx2,fma")]
    pub fn dot<const R: usize>(w: &[BlockQ5K], x: [&[BlockQ8K]; R]) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let low = _mm256_set1_epi8(0x0F);
        let one = _mm256_set1_epi8(1);
        for (bi, b) in w.iter().enumerate() {
            // the 8 sub-blocks as bytes 0..32: nibble | fifth bit << 4
            let qh = load_u8(&b.qh);
            let mut q = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let packed = load_u8(&b.qs[32 * c..]);
                let nibbles = [
                    _mm256_and_si256(packed, low),
                    _mm256_and_si256(_mm256_srli_epi16(packed, 4), low),
                ];
                for (h, nib) in nibbles.into_iter().enumerate() {
                    let j = 2 * c + h;
                    // bit j of every qh byte as 0 or 1 (the 16-bit shift moves each byte's bit j
                    // to its own bit 0; the mask drops what crossed from the neighbour)
                    let shift = _mm_cvtsi32_si128(j as i32);
                    let bit = _mm256_and_si256(_mm256_srl_epi16(qh, shift), one);
                    q[j] = _mm256_or_si256(nib, _mm256_slli_epi16(bit, 4));
                }
            }
            let a: [&BlockQ8K; R] = std::array::from_fn(|r| &x[r][bi]);
            super_block(b.d, b.dmin, &b.sc, &b.m, &q, a, &mut acc);
        }
        std::array::from_fn(|r| hsum(acc[r]))
    }
}
