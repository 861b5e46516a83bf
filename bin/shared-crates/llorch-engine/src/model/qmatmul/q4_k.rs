//! Q4_K weights: super-blocks of 256 values in 8 sub-blocks of 32, value `d·sc·q - dmin·m`
//! with 4-bit `q` and a 6-bit scale `sc` and minimum `m` per sub-block.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::{BlockQ8K, RowGroup, WeightBlock};

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
}

/// Eight rows' Q4_K super-blocks. `qs[32·(8c + p) + 4i + t]` is row `i`'s stored byte
/// `32c + 4p + t`: its low nibble is value `4p + t` of sub-block `2c`, its high nibble the same
/// value of sub-block `2c + 1`. `sc[8j + i]` is row `i`'s scale of sub-block `j`; the minimums
/// go in pairs of sub-blocks, `m[16·(j / 2) + 2i + j % 2]`, for 16-bit multiply-adds.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct GroupQ4K {
    d: [u16; 8],
    dmin: [u16; 8],
    sc: [u8; 64],
    m: [u8; 64],
    qs: [u8; 1024],
}

impl RowGroup for GroupQ4K {
    type Block = BlockQ4K;

    fn pack(rows: &[BlockQ4K; 8]) -> Self {
        GroupQ4K {
            d: rows.map(|b| f16::from_f32(b.d).to_bits()),
            dmin: rows.map(|b| f16::from_f32(b.dmin).to_bits()),
            sc: std::array::from_fn(|x| rows[x % 8].sc[x / 8]),
            m: std::array::from_fn(|x| {
                let (h, i, odd) = (x / 16, (x % 16) / 2, x % 2);
                rows[i].m[2 * h + odd]
            }),
            qs: std::array::from_fn(|x| {
                let (cp, i, t) = (x / 32, (x % 32) / 4, x % 4);
                rows[i].qs[32 * (cp / 8) + 4 * (cp % 8) + t]
            }),
        }
    }

    fn unpack(&self, i: usize) -> BlockQ4K {
        BlockQ4K {
            d: f16::from_bits(self.d[i]).to_f32(),
            dmin: f16::from_bits(self.dmin[i]).to_f32(),
            sc: std::array::from_fn(|j| self.sc[8 * j + i]),
            m: std::array::from_fn(|j| self.m[16 * (j / 2) + 2 * i + j % 2]),
            qs: std::array::from_fn(|y| {
                let (c, p, t) = (y / 32, (y % 32) / 4, y % 4);
                self.qs[32 * (8 * c + p) + 4 * i + t]
            }),
        }
    }

    fn accumulate(&self, a: &BlockQ8K, acc: &mut [f32; 8]) {
        for (i, acc) in acc.iter_mut().enumerate() {
            let b = self.unpack(i);
            let (mut dots, mut mins) = (0i32, 0i32);
            for j in 0..8 {
                let s: i32 = (32 * j..32 * j + 32).map(|v| b.q(v) * a.qs[v] as i32).sum();
                dots += b.sc[j] as i32 * s;
                mins += b.m[j] as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
            }
            *acc = (dots as f32).mul_add(b.d * a.d, *acc);
            *acc = (mins as f32).mul_add(b.dmin * -a.d, *acc);
        }
    }

    group_kernel_items!(group_avx2);
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
mod group_avx2 {
    use std::arch::x86_64::*;

    use super::super::simd::{dot_acc, lanes, load_ph, load_u8, prefetch_ahead, quad};
    use super::{BlockQ8K, GroupQ4K};

    /// Eight weight rows against `R` activation rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dot<const R: usize>(w: &[GroupQ4K], x: [&[BlockQ8K]; R]) -> [[f32; 8]; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let low = _mm256_set1_epi8(0x0F);
        for (bi, g) in w.iter().enumerate() {
            prefetch_ahead(g);
            let a: [&BlockQ8K; R] = std::array::from_fn(|r| &x[r][bi]);
            let mut dots = [_mm256_setzero_si256(); R];
            for c in 0..4 {
                // sub-blocks 2c (low nibbles) and 2c + 1 (high nibbles)
                let mut lo_sum = [_mm256_setzero_si256(); R];
                let mut hi_sum = [_mm256_setzero_si256(); R];
                for p in 0..8 {
                    let v = load_u8(&g.qs[32 * (8 * c + p)..]);
                    let lo = _mm256_and_si256(v, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                    for r in 0..R {
                        lo_sum[r] = dot_acc(lo_sum[r], lo, quad(&a[r].qs, 64 * c + 4 * p));
                        hi_sum[r] = dot_acc(hi_sum[r], hi, quad(&a[r].qs, 64 * c + 32 + 4 * p));
                    }
                }
                let scale = |j: usize| {
                    // SAFETY: reads bytes 8j..8j + 8 of the 64 in `sc` (j < 8).
                    let b = unsafe { _mm_loadl_epi64(g.sc[8 * j..].as_ptr() as *const __m128i) };
                    _mm256_cvtepu8_epi32(b)
                };
                let (sc_lo, sc_hi) = (scale(2 * c), scale(2 * c + 1));
                for r in 0..R {
                    let both = _mm256_add_epi32(
                        _mm256_mullo_epi32(lo_sum[r], sc_lo),
                        _mm256_mullo_epi32(hi_sum[r], sc_hi),
                    );
                    dots[r] = _mm256_add_epi32(dots[r], both);
                }
            }
            let m: [__m256i; 4] = std::array::from_fn(|h| {
                // SAFETY: reads bytes 16h..16h + 16 of the 64 in `m` (h < 4).
                let b = unsafe { _mm_loadu_si128(g.m[16 * h..].as_ptr() as *const __m128i) };
                _mm256_cvtepu8_epi16(b)
            });
            let (d, dmin) = (load_ph(&g.d), load_ph(&g.dmin));
            for r in 0..R {
                let bs = &a[r].bsums;
                let sub = |j: usize| (bs[2 * j] + bs[2 * j + 1]) as u16 as u32;
                let mut mins = _mm256_setzero_si256();
                for (h, m) in m.iter().enumerate() {
                    let pair = sub(2 * h) | (sub(2 * h + 1) << 16);
                    let p = _mm256_madd_epi16(*m, _mm256_set1_epi32(pair as i32));
                    mins = _mm256_add_epi32(mins, p);
                }
                let ds = _mm256_mul_ps(d, _mm256_set1_ps(a[r].d));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots[r]), ds, acc[r]);
                let ms = _mm256_mul_ps(dmin, _mm256_set1_ps(-a[r].d));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins), ms, acc[r]);
            }
        }
        std::array::from_fn(|r| lanes(acc[r]))
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::super::simd::load;
    use super::BlockQ8K;

    /// Add one Q5_K super-block (in Q4_K's layout; its 8 sub-blocks' values as unsigned bytes in
    /// `q`) times each of `R` activation blocks to `acc`.
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
