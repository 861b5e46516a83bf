//! Activation rows quantized to 8 bits the way llama.cpp quantizes them for each weight type:
//! [`BlockQ8`] (32 values) for Q4_1, Q5_0 and Q8_0 weights, [`BlockQ8K`] (256 values with
//! per-16 sums) for the k-quants.

/// An activation block type: the right-hand side of a weight type's dot product.
pub trait ActBlock: Copy + Send + Sync + 'static {
    /// Values per block.
    const QK: usize;
    /// An all-zero block (the initial value of a buffer).
    const ZERO: Self;
    /// Quantize `x` (a multiple of `QK` values) into `out`.
    fn quantize(x: &[f32], out: &mut [Self]);
    /// The block's values as f32 (what the kernels multiply with).
    fn values(&self) -> Vec<f32>;
}

/// One quantized activation block: 32 signed 8-bit values, scale, scale × Σq, and Σq.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct BlockQ8 {
    pub(super) qs: [i8; 32],
    pub(super) d: f32,
    pub(super) s: f32,
    pub(super) sum: i32,
}

impl ActBlock for BlockQ8 {
    const QK: usize = 32;
    const ZERO: Self = BlockQ8 {
        qs: [0; 32],
        d: 0.0,
        s: 0.0,
        sum: 0,
    };

    /// Scale `max|x| / 127`, values rounded to nearest (llama.cpp's Q8_0 / Q8_1).
    fn quantize(x: &[f32], out: &mut [Self]) {
        for (b, src) in out.iter_mut().zip(x.chunks_exact(Self::QK)) {
            let amax = src.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in b.qs.iter_mut().zip(src) {
                *q = (v * id).round() as i8;
                sum += *q as i32;
            }
            b.d = d;
            b.s = d * sum as f32;
            b.sum = sum;
        }
    }

    fn values(&self) -> Vec<f32> {
        self.qs.iter().map(|&q| q as f32 * self.d).collect()
    }
}

/// One quantized activation super-block (llama.cpp's Q8_K): 256 signed 8-bit values, the sums
/// of each 16 of them, and the scale.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct BlockQ8K {
    pub(super) qs: [i8; 256],
    pub(super) bsums: [i16; 16],
    pub(super) d: f32,
}

impl ActBlock for BlockQ8K {
    const QK: usize = 256;
    const ZERO: Self = BlockQ8K {
        qs: [0; 256],
        bsums: [0; 16],
        d: 0.0,
    };

    /// The value of largest magnitude maps to -127 (so the scale carries its sign), the others
    /// are rounded half to even: llama.cpp's `quantize_row_q8_K` arithmetic.
    fn quantize(x: &[f32], out: &mut [Self]) {
        for (b, src) in out.iter_mut().zip(x.chunks_exact(Self::QK)) {
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in src {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                *b = Self::ZERO;
                continue;
            }
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(src) {
                *q = ((iscale * v).round_ties_even() as i32).clamp(-127, 127) as i8;
            }
            for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = q.iter().map(|&v| v as i16).sum();
            }
            b.d = 1.0 / iscale;
        }
    }

    fn values(&self) -> Vec<f32> {
        self.qs.iter().map(|&q| q as f32 * self.d).collect()
    }
}
