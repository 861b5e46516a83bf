//! Q6_K weights: super-blocks of 256 values, value `d·sc·(q - 32)` with 6-bit `q` (4 bits in
//! `ql`, 2 in `qh`) and a signed 8-bit scale `sc` per 16 values.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::{BlockQ8K, WeightBlock};

/// One Q6_K super-block as stored, but with the f16 scale widened to f32 and moved first. Per
/// half of 128 values: value `l` (0..32) takes the low nibble of `ql[l]` and bits 0-1 of
/// `qh[l]`, value `32 + l` the low nibble of `ql[32 + l]` and bits 2-3, value `64 + l` the high
/// nibble of `ql[l]` and bits 4-5, value `96 + l` the high nibble of `ql[32 + l]` and bits 6-7.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ6K {
    d: f32,
    ql: [u8; 128],
    qh: [u8; 64],
    sc: [i8; 16],
}

impl BlockQ6K {
    /// Value `i` (0..256) as a signed integer in -32..32.
    fn q(&self, i: usize) -> i32 {
        let (half, t, l) = (i / 128, i % 128 / 32, i % 32);
        let ql = self.ql[64 * half + 32 * (t % 2) + l];
        let lo = if t < 2 { ql & 0x0F } else { ql >> 4 };
        let hi = (self.qh[32 * half + l] >> (2 * t)) & 3;
        (lo | (hi << 4)) as i32 - 32
    }
}

impl WeightBlock for BlockQ6K {
    const DTYPE: GgmlDType = GgmlDType::Q6K;
    const BYTES: usize = 210;
    const QK: usize = 256;
    type Act = BlockQ8K;

    fn read(b: &[u8]) -> Self {
        BlockQ6K {
            ql: b[0..128].try_into().expect("block size"),
            qh: b[128..192].try_into().expect("block size"),
            sc: std::array::from_fn(|i| b[192 + i] as i8),
            d: f16::from_le_bytes([b[208], b[209]]).to_f32(),
        }
    }

    fn dequant(&self, out: &mut [f32]) {
        for (i, o) in out[..256].iter_mut().enumerate() {
            *o = self.d * self.sc[i / 16] as f32 * self.q(i) as f32;
        }
    }

    /// `Σ d·d_x·Σ_g sc_g·Σ(q - 32)·q_x` over the super-blocks (`g`: groups of 16 values).
    fn dot_scalar(w: &[Self], x: &[BlockQ8K]) -> f32 {
        let mut acc = 0f32;
        for (b, a) in w.iter().zip(x) {
            let mut dots = 0i32;
            for g in 0..16 {
                let s: i32 = (16 * g..16 * g + 16).map(|i| b.q(i) * a.qs[i] as i32).sum();
                dots += b.sc[g] as i32 * s;
            }
            acc += b.d * a.d * dots as f32;
        }
        acc
    }

    kernel_items!();
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::simd::{hsum, load, load_u8};
    use super::{BlockQ6K, BlockQ8K};

    /// One weight row against `R` activation rows; each super-block is unpacked once.
    /// `Σ sc·(q - 32)·x` is computed as `Σ sc·q·x - 32·Σ sc·Σx`, the second part from the
    /// activations' per-16 sums, so the products stay unsigned × signed.
    #[target_feature(enable = "avx2,fma")]
    pub fn dot<const R: usize>(w: &[BlockQ6K], x: [&[BlockQ8K]; R]) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let (low, two) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
        for (bi, b) in w.iter().enumerate() {
            // the 8 runs of 32 values as bytes 0..64, and their two scales as i16 lanes
            let mut q = [_mm256_setzero_si256(); 8];
            let mut sc = [_mm256_setzero_si256(); 8];
            for half in 0..2 {
                let ql0 = load_u8(&b.ql[64 * half..]);
                let ql1 = load_u8(&b.ql[64 * half + 32..]);
                let qh = load_u8(&b.qh[32 * half..]);
                let lows = [
                    _mm256_and_si256(ql0, low),
                    _mm256_and_si256(ql1, low),
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low),
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
                ];
                let highs = [
                    _mm256_and_si256(qh, two),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), two),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 4), two),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 6), two),
                ];
                for t in 0..4 {
                    let j = 4 * half + t;
                    q[j] = _mm256_or_si256(lows[t], _mm256_slli_epi16(highs[t], 4));
                    sc[j] = _mm256_set_m128i(
                        _mm_set1_epi16(b.sc[2 * j + 1] as i16),
                        _mm_set1_epi16(b.sc[2 * j] as i16),
                    );
                }
            }
            // SAFETY: reads the 16 bytes of `b.sc`.
            let sc16 =
                _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(b.sc.as_ptr() as *const __m128i) });
            for r in 0..R {
                let a = &x[r][bi];
                let mut dots = _mm256_setzero_si256();
                for j in 0..8 {
                    let p = _mm256_maddubs_epi16(q[j], load(&a.qs[32 * j..]));
                    dots = _mm256_add_epi32(dots, _mm256_madd_epi16(p, sc[j]));
                }
                // SAFETY: reads the 32 bytes of `a.bsums`.
                let bs = unsafe { _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i) };
                let offset = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
                let dots = _mm256_sub_epi32(dots, offset);
                acc[r] =
                    _mm256_fmadd_ps(_mm256_set1_ps(b.d * a.d), _mm256_cvtepi32_ps(dots), acc[r]);
            }
        }
        std::array::from_fn(|r| hsum(acc[r]))
    }
}
