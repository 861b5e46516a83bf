//! Q4_K weights: super-blocks of 256 values in 8 sub-blocks of 32, value `d·sc·q - dmin·m`
//! with 4-bit `q` and a 6-bit scale `sc` and minimum `m` per sub-block.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::{BlockQ8K, WeightBlock};

/// One Q4_K super-block. The f16 scales are widened and the 12 bytes of packed 6-bit scales
/// and minimums unpacked at load (the same numbers, laid out for the kernel); `qs` is as stored:
/// each 32 bytes hold sub-block `2c` in the low nibbles and `2c + 1` in the high nibbles.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4K {
    d: f32,
    dmin: f32,
    sc: [u8; 8],
    m: [u8; 8],
    qs: [u8; 128],
}

impl BlockQ4K {
    /// Value `i` (0..256) as its 4-bit integer.
    fn q(&self, i: usize) -> i32 {
        let byte = self.qs[i / 64 * 32 + i % 32];
        (if i % 64 < 32 { byte & 0x0F } else { byte >> 4 }) as i32
    }
}

impl WeightBlock for BlockQ4K {
    const DTYPE: GgmlDType = GgmlDType::Q4K;
    const BYTES: usize = 144;
    const QK: usize = 256;
    type Act = BlockQ8K;

    fn read(b: &[u8]) -> Self {
        let (sc, m) = unpack_scales(&b[4..16]);
        BlockQ4K {
            d: f16::from_le_bytes([b[0], b[1]]).to_f32(),
            dmin: f16::from_le_bytes([b[2], b[3]]).to_f32(),
            sc,
            m,
            qs: b[16..144].try_into().expect("block size"),
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

/// The 6-bit scales and minimums of the 8 sub-blocks from their 12 packed bytes (Q4_K, Q5_K).
pub(super) fn unpack_scales(p: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = p[j] & 63;
        m[j] = p[j + 4] & 63;
        sc[j + 4] = (p[j + 8] & 0x0F) | ((p[j] >> 6) << 4);
        m[j + 4] = (p[j + 8] >> 4) | ((p[j + 4] >> 6) << 4);
    }
    (sc, m)
}

/// Reference dot product of one Q4_K/Q5_K super-block (values `q(0..256)`) with activations
/// `a`: `d_x·(d·Σ_j sc_j·Σq·q_x - dmin·Σ_j m_j·Σq_x)`.
pub(super) fn super_block_dot(
    d: f32,
    dmin: f32,
    sc: &[u8; 8],
    m: &[u8; 8],
    q: impl Fn(usize) -> i32,
    a: &BlockQ8K,
) -> f32 {
    let (mut dots, mut mins) = (0i32, 0i32);
    for j in 0..8 {
        let s: i32 = (32 * j..32 * j + 32).map(|i| q(i) * a.qs[i] as i32).sum();
        dots += sc[j] as i32 * s;
        mins += m[j] as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
    }
    a.d * (d * dots as f32 - dmin * mins as f32)
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::super::simd::{hsum, load, load_u8};
    use super::{BlockQ4K, BlockQ8K};

    /// One weight row against `R` activation rows; each super-block is unpacked once.
    #[target_feature(enable = "avx2,fma")]
    pub fn dot<const R: usize>(w: &[BlockQ4K], x: [&[BlockQ8K]; R]) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let low = _mm256_set1_epi8(0x0F);
        for (bi, b) in w.iter().enumerate() {
            // the 8 sub-blocks as bytes 0..16
            let mut q = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let packed = load_u8(&b.qs[32 * c..]);
                q[2 * c] = _mm256_and_si256(packed, low);
                q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
            }
            let a: [&BlockQ8K; R] = std::array::from_fn(|r| &x[r][bi]);
            super_block(b.d, b.dmin, &b.sc, &b.m, &q, a, &mut acc);
        }
        std::array::from_fn(|r| hsum(acc[r]))
    }

    /// Add one Q4_K/Q5_K super-block (its 8 sub-blocks' values as unsigned bytes in `q`) times
    /// each of `R` activation blocks to `acc`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) fn super_block<const R: usize>(
        d: f32,
        dmin: f32,
        sc: &[u8; 8],
        m: &[u8; 8],
        q: &[__m256i; 8],
        a: [&BlockQ8K; R],
        acc: &mut [__m256; R],
    ) {
        let scales: [__m256i; 8] = std::array::from_fn(|j| _mm256_set1_epi16(sc[j] as i16));
        // minimums, each repeated for the two 16-value sums of its sub-block
        // SAFETY: reads the 8 bytes of `m`.
        let m8 = unsafe { _mm_loadl_epi64(m.as_ptr() as *const __m128i) };
        let m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
        for r in 0..R {
            let mut dots = _mm256_setzero_si256();
            for j in 0..8 {
                let p = _mm256_maddubs_epi16(q[j], load(&a[r].qs[32 * j..]));
                dots = _mm256_add_epi32(dots, _mm256_madd_epi16(p, scales[j]));
            }
            // SAFETY: reads the 32 bytes of `bsums`.
            let bs = unsafe { _mm256_loadu_si256(a[r].bsums.as_ptr() as *const __m256i) };
            let mins = _mm256_madd_epi16(bs, m16);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[r].d), _mm256_cvtepi32_ps(dots), acc[r]);
            acc[r] = _mm256_fmadd_ps(
                _mm256_set1_ps(-dmin * a[r].d),
                _mm256_cvtepi32_ps(mins),
                acc[r],
            );
        }
    }
}
