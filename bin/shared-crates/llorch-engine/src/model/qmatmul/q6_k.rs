//! Q6_K weights: super-blocks of 256 values, value `d·sc·(q - 32)` with 6-bit `q` (4 bits in
//! `ql`, 2 in `qh`) and a signed 8-bit scale `sc` per 16 values.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::{BlockQ8K, RowGroup, WeightBlock};

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

impl BlockQ6K {
    /// The block with unsigned 6-bit values `q` (0..64, value `q - 32`) packed as stored.
    fn from_values(d: f32, sc: [i8; 16], q: &[u8; 256]) -> Self {
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for (i, &v) in q.iter().enumerate() {
            let (half, t, l) = (i / 128, i % 128 / 32, i % 32);
            ql[64 * half + 32 * (t % 2) + l] |= (v & 0x0F) << if t < 2 { 0 } else { 4 };
            qh[32 * half + l] |= (v >> 4) << (2 * t);
        }
        BlockQ6K { d, ql, qh, sc }
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
}

/// Eight rows' Q6_K super-blocks, values unsigned (`q`, 0..64, for `q - 32`) in chunks of four:
/// chunk `k` holds values `4k..4k + 4`, byte `4i + t` of a 32-byte vector for row `i`. Low 4
/// bits: vector `P` (0..32) holds chunk `P` in the low nibbles and `P + 32` in the high ones;
/// high 2 bits: vector `Q` (0..16) holds chunks `Q + 16s` at bits `2s`. They are stored in the
/// order the kernel reads them, `[low P = Q, low P = Q + 16, high Q]` for each `Q` (see
/// [`low_at`], [`high_at`]). The scales go in pairs of 16-value sub-blocks,
/// `sc[16·(g / 2) + 2i + g % 2]`, for 16-bit multiply-adds.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct GroupQ6K {
    d: [u16; 8],
    sc: [i8; 128],
    q: [u8; 1536],
}

/// Offset in [`GroupQ6K::q`] of low-bits vector `p` (0..32).
const fn low_at(p: usize) -> usize {
    96 * (p % 16) + 32 * (p / 16)
}

/// Offset in [`GroupQ6K::q`] of high-bits vector `q` (0..16).
const fn high_at(q: usize) -> usize {
    96 * q + 64
}

impl RowGroup for GroupQ6K {
    type Block = BlockQ6K;

    fn pack(rows: &[BlockQ6K; 8]) -> Self {
        let q = |i: usize, v: usize| (rows[i].q(v) + 32) as u8;
        GroupQ6K {
            d: rows.map(|b| f16::from_f32(b.d).to_bits()),
            sc: std::array::from_fn(|x| {
                let (h, i, odd) = (x / 16, (x % 16) / 2, x % 2);
                rows[i].sc[2 * h + odd]
            }),
            q: {
                let mut out = [0u8; 1536];
                for (i, t) in (0..8).flat_map(|i| (0..4).map(move |t| (i, t))) {
                    for p in 0..32 {
                        let lo = (q(i, 4 * p + t) & 0x0F) | ((q(i, 4 * (p + 32) + t) & 0x0F) << 4);
                        out[low_at(p) + 4 * i + t] = lo;
                    }
                    for k in 0..16 {
                        let hi = (0..4).fold(0u8, |b, s| {
                            b | ((q(i, 4 * (k + 16 * s) + t) >> 4) << (2 * s))
                        });
                        out[high_at(k) + 4 * i + t] = hi;
                    }
                }
                out
            },
        }
    }

    fn unpack(&self, i: usize) -> BlockQ6K {
        let q: [u8; 256] = std::array::from_fn(|v| {
            let (k, t) = (v / 4, v % 4);
            let lo = self.q[low_at(k % 32) + 4 * i + t] >> if k < 32 { 0 } else { 4 };
            let hi = self.q[high_at(k % 16) + 4 * i + t] >> (2 * (k / 16));
            (lo & 0x0F) | ((hi & 3) << 4)
        });
        let sc = std::array::from_fn(|g| self.sc[16 * (g / 2) + 2 * i + g % 2]);
        BlockQ6K::from_values(f16::from_bits(self.d[i]).to_f32(), sc, &q)
    }

    fn accumulate(&self, a: &BlockQ8K, acc: &mut [f32; 8]) {
        for (i, acc) in acc.iter_mut().enumerate() {
            let b = self.unpack(i);
            let mut dots = 0i32;
            for g in 0..16 {
                let s: i32 = (16 * g..16 * g + 16).map(|v| b.q(v) * a.qs[v] as i32).sum();
                dots += b.sc[g] as i32 * s;
            }
            *acc = (dots as f32).mul_add(b.d * a.d, *acc);
        }
    }

    group_kernel_items!(group_avx2);
}

#[cfg(target_arch = "x86_64")]
mod group_avx2 {
    use std::arch::x86_64::*;

    use super::super::simd::{dot_acc, lanes, load_ph, load_u8, prefetch_ahead, quad};
    use super::{high_at, low_at, BlockQ8K, GroupQ6K};

    /// Eight weight rows against `R` activation rows. The products are taken with the unsigned
    /// values and corrected by `-32·Σ sc·Σx` from the activations' per-16 sums.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dot<const R: usize>(w: &[GroupQ6K], x: [&[BlockQ8K]; R]) -> [[f32; 8]; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let (low, two) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
        for (bi, g) in w.iter().enumerate() {
            prefetch_ahead(g);
            let a: [&BlockQ8K; R] = std::array::from_fn(|r| &x[r][bi]);
            // the scales of sub-blocks 2h and 2h + 1 as i16 pairs, one pair per row
            let pair = |h: usize| {
                // SAFETY: reads bytes 16h..16h + 16 of the 128 in `sc` (h < 8).
                let b = unsafe { _mm_loadu_si128(g.sc[16 * h..].as_ptr() as *const __m128i) };
                _mm256_cvtepi8_epi16(b)
            };
            let mut dots = [_mm256_setzero_si256(); R];
            for big in 0..4 {
                // sub-blocks big, big + 4, big + 8, big + 12 (chunks k = q + 16s, q in 4·big..)
                let mut sums = [[_mm256_setzero_si256(); R]; 4];
                for q in 4 * big..4 * big + 4 {
                    let n0 = load_u8(&g.q[low_at(q)..]);
                    let n1 = load_u8(&g.q[low_at(q + 16)..]);
                    let h = load_u8(&g.q[high_at(q)..]);
                    let high = |s: i32| {
                        let bits = match s {
                            0 => h,
                            1 => _mm256_srli_epi16(h, 2),
                            2 => _mm256_srli_epi16(h, 4),
                            _ => _mm256_srli_epi16(h, 6),
                        };
                        _mm256_slli_epi16(_mm256_and_si256(bits, two), 4)
                    };
                    let chunks = [
                        _mm256_or_si256(_mm256_and_si256(n0, low), high(0)),
                        _mm256_or_si256(_mm256_and_si256(n1, low), high(1)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(n0, 4), low), high(2)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(n1, 4), low), high(3)),
                    ];
                    for (s, v) in chunks.iter().enumerate() {
                        let k = q + 16 * s;
                        for r in 0..R {
                            sums[s][r] = dot_acc(sums[s][r], *v, quad(&a[r].qs, 4 * k));
                        }
                    }
                }
                for (s, sums) in sums.iter().enumerate() {
                    let sub = big + 4 * s;
                    let p = pair(sub / 2);
                    let scale = if sub % 2 == 0 {
                        _mm256_srai_epi32(_mm256_slli_epi32(p, 16), 16)
                    } else {
                        _mm256_srai_epi32(p, 16)
                    };
                    for r in 0..R {
                        dots[r] = _mm256_add_epi32(dots[r], _mm256_mullo_epi32(sums[r], scale));
                    }
                }
            }
            let d = load_ph(&g.d);
            for r in 0..R {
                let bs = &a[r].bsums;
                let mut offset = _mm256_setzero_si256();
                for h in 0..8 {
                    let both = (bs[2 * h] as u16 as u32) | ((bs[2 * h + 1] as u16 as u32) << 16);
                    let m = _mm256_madd_epi16(pair(h), _mm256_set1_epi32(both as i32));
                    offset = _mm256_add_epi32(offset, m);
                }
                let total = _mm256_sub_epi32(dots[r], _mm256_slli_epi32(offset, 5));
                let ds = _mm256_mul_ps(d, _mm256_set1_ps(a[r].d));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), ds, acc[r]);
            }
        }
        std::array::from_fn(|r| lanes(acc[r]))
    }
}
