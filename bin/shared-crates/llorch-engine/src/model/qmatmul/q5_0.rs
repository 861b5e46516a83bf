//! Q5_0 weights: 32 values per block, `d·(q - 16)` with 5-bit `q` (4 bits in `qs`, the fifth
//! in one bit of `qh`). Gemma 3's Q4_K_M files use it for rows of 640 values (not a multiple
//! of the k-quants' 256).

use candle_core::quantized::GgmlDType;
use half::f16;

use super::group::off;
use super::{BlockQ8, RowGroup, WeightBlock};

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
}

/// Eight rows' Q5_0 blocks: `qs` as in [`super::GroupQ4_1`]; `qh[c]` holds chunk `c`'s fifth
/// bits, bit `4i + t` for row `i`'s value `off(c) + t` (so bit `j` belongs to byte `j` of the
/// chunk's vector).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct GroupQ5_0 {
    d: [u16; 8],
    qh: [u32; 8],
    qs: [u8; 128],
}

impl RowGroup for GroupQ5_0 {
    type Block = BlockQ5_0;

    fn pack(rows: &[BlockQ5_0; 8]) -> Self {
        GroupQ5_0 {
            d: rows.map(|b| f16::from_f32(b.d).to_bits()),
            qh: std::array::from_fn(|c| {
                (0..32).fold(0u32, |bits, j| {
                    let (i, t) = (j / 4, j % 4);
                    bits | (((rows[i].qh >> (off(c) + t)) & 1) << j)
                })
            }),
            qs: std::array::from_fn(|j| rows[(j % 32) / 4].qs[4 * (j / 32) + j % 4]),
        }
    }

    fn unpack(&self, i: usize) -> BlockQ5_0 {
        let mut qh = 0u32;
        for c in 0..8 {
            for t in 0..4 {
                qh |= ((self.qh[c] >> (4 * i + t)) & 1) << (off(c) + t);
            }
        }
        BlockQ5_0 {
            d: f16::from_bits(self.d[i]).to_f32(),
            qh,
            qs: std::array::from_fn(|j| self.qs[32 * (j / 4) + 4 * i + j % 4]),
        }
    }

    fn accumulate(&self, a: &BlockQ8, acc: &mut [f32; 8]) {
        for (i, acc) in acc.iter_mut().enumerate() {
            let b = self.unpack(i);
            let s: i32 = (0..32).map(|j| b.q(j) * a.qs[j] as i32).sum();
            *acc = (s as f32).mul_add(b.d * a.d, *acc);
        }
    }

    group_kernel_items!();
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::group::off;
    use super::super::simd::{dot_acc, lanes, load_ph, load_u8, prefetch_ahead, quad};
    use super::{BlockQ8, GroupQ5_0};

    /// 0x10 in byte `j` where bit `j` of `bits` is set, else 0.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn sixteens(bits: u32) -> __m256i {
        #[cfg(all(target_feature = "avx512bw", target_feature = "avx512vl"))]
        // SAFETY: this branch is compiled only when the build enables AVX-512 BW and VL.
        #[allow(unused_unsafe)]
        unsafe {
            _mm256_maskz_mov_epi8(bits, _mm256_set1_epi8(0x10))
        }
        #[cfg(not(all(target_feature = "avx512bw", target_feature = "avx512vl")))]
        {
            // byte j takes byte j/8 of bits; OR-ing every bit but bit j%8 leaves all ones iff
            // bit j is set
            let spread = _mm256_shuffle_epi8(
                _mm256_set1_epi32(bits as i32),
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
    }

    /// Eight weight rows against `R` activation rows. The products are taken with the stored
    /// unsigned values `q` (0..32) and corrected by `-16·Σx` per block.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dot<const R: usize>(w: &[GroupQ5_0], x: [&[BlockQ8]; R]) -> [[f32; 8]; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let low = _mm256_set1_epi8(0x0F);
        for (bi, g) in w.iter().enumerate() {
            prefetch_ahead(g);
            let a: [&BlockQ8; R] = std::array::from_fn(|r| &x[r][bi]);
            let mut s: [__m256i; R] = std::array::from_fn(|r| _mm256_set1_epi32(-16 * a[r].sum));
            for p in 0..4 {
                let v = load_u8(&g.qs[32 * p..]);
                let lo = _mm256_or_si256(_mm256_and_si256(v, low), sixteens(g.qh[p]));
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                let hi = _mm256_or_si256(hi, sixteens(g.qh[p + 4]));
                for r in 0..R {
                    s[r] = dot_acc(s[r], lo, quad(&a[r].qs, off(p)));
                    s[r] = dot_acc(s[r], hi, quad(&a[r].qs, off(p + 4)));
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
