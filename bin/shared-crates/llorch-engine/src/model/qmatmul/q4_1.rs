//! Q4_1 weights: 32 values per block, `d·q + m` with 4-bit `q`.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::{BlockQ8, RowGroup, WeightBlock};

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
}

/// Eight rows' Q4_1 blocks: `qs[32p + 4i + t]` is row `i`'s stored byte `4p + t` (its low
/// nibble is value `4p + t`, chunk `p`; its high nibble value `16 + 4p + t`, chunk `p + 4`).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct GroupQ4_1 {
    d: [u16; 8],
    m: [u16; 8],
    qs: [u8; 128],
}

impl RowGroup for GroupQ4_1 {
    type Block = BlockQ4_1;

    fn pack(rows: &[BlockQ4_1; 8]) -> Self {
        GroupQ4_1 {
            d: rows.map(|b| f16::from_f32(b.d).to_bits()),
            m: rows.map(|b| f16::from_f32(b.m).to_bits()),
            qs: std::array::from_fn(|j| rows[(j % 32) / 4].qs[4 * (j / 32) + j % 4]),
        }
    }

    fn unpack(&self, i: usize) -> BlockQ4_1 {
        BlockQ4_1 {
            d: f16::from_bits(self.d[i]).to_f32(),
            m: f16::from_bits(self.m[i]).to_f32(),
            qs: std::array::from_fn(|j| self.qs[32 * (j / 4) + 4 * i + j % 4]),
        }
    }

    fn accumulate(&self, a: &BlockQ8, acc: &mut [f32; 8]) {
        for (i, acc) in acc.iter_mut().enumerate() {
            let b = self.unpack(i);
            let mut s = 0i32;
            for j in 0..16 {
                s += (b.qs[j] & 0x0F) as i32 * a.qs[j] as i32;
                s += (b.qs[j] >> 4) as i32 * a.qs[j + 16] as i32;
            }
            *acc = (s as f32).mul_add(b.d * a.d, *acc);
            *acc = b.m.mul_add(a.s, *acc);
        }
    }

    group_kernel_items!();
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::group::off;
    use super::super::simd::{dot_acc, lanes, load_ph, load_u8, prefetch_ahead, quad};
    use super::{BlockQ8, GroupQ4_1};

    /// Eight weight rows against `R` activation rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dot<const R: usize>(w: &[GroupQ4_1], x: [&[BlockQ8]; R]) -> [[f32; 8]; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let low = _mm256_set1_epi8(0x0F);
        for (bi, g) in w.iter().enumerate() {
            prefetch_ahead(g);
            let a: [&BlockQ8; R] = std::array::from_fn(|r| &x[r][bi]);
            let mut s = [_mm256_setzero_si256(); R];
            for p in 0..4 {
                let v = load_u8(&g.qs[32 * p..]);
                let lo = _mm256_and_si256(v, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                for r in 0..R {
                    s[r] = dot_acc(s[r], lo, quad(&a[r].qs, off(p)));
                    s[r] = dot_acc(s[r], hi, quad(&a[r].qs, off(p + 4)));
                }
            }
            let (d, m) = (load_ph(&g.d), load_ph(&g.m));
            for r in 0..R {
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(a[r].d));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r]), scale, acc[r]);
                acc[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(a[r].s), acc[r]);
            }
        }
        std::array::from_fn(|r| lanes(acc[r]))
    }
}
