//! The attention block with AVX2/FMA, for head sizes that are a multiple of 8, on keys and
//! values widened to f32 once per call.
//!
//! Scores: eight keys at once against one query row, each key's eight lane sums reduced by the
//! same tree (so a score does not depend on which keys share its group). Weighted values: the
//! output of two (row, head) pairs kept in registers, 64 dimensions at a time, while the keys
//! stream past; a key a pair may not see adds an exact zero. Every row's arithmetic is
//! therefore the same whatever the rows computed with it, as the module above promises.

use std::arch::x86_64::*;

/// Keys and values of one KV head widened to f32 from position `first` on, `rows × hd`, with 8
/// zero rows past the last position (score groups of 8 may read past the visible keys).
pub(super) struct Widened<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    /// The position of row 0 (no query row of the call sees an earlier one).
    pub first: usize,
}

/// Scores of query row `q` against keys `j0..j0 + 8` (rows of `keys`), times `scale`, into
/// `out[..8]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn scores8(q: &[f32], keys: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
    assert!(q.len() >= hd && keys.len() >= 8 * hd && out.len() >= 8);
    let mut acc = [_mm256_setzero_ps(); 8];
    for c in (0..hd).step_by(8) {
        // SAFETY: c + 8 <= hd <= q.len(), and (kk * hd + c + 8) <= 8 * hd <= keys.len().
        let qv = unsafe { _mm256_loadu_ps(q.as_ptr().add(c)) };
        for (kk, a) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            let kv = unsafe { _mm256_loadu_ps(keys.as_ptr().add(kk * hd + c)) };
            *a = _mm256_fmadd_ps(qv, kv, *a);
        }
    }
    // lane kk of the result: ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) of acc[kk]
    let h01 = _mm256_hadd_ps(acc[0], acc[1]);
    let h23 = _mm256_hadd_ps(acc[2], acc[3]);
    let h45 = _mm256_hadd_ps(acc[4], acc[5]);
    let h67 = _mm256_hadd_ps(acc[6], acc[7]);
    let h0123 = _mm256_hadd_ps(h01, h23);
    let h4567 = _mm256_hadd_ps(h45, h67);
    let lo = _mm256_permute2f128_ps(h0123, h4567, 0x20);
    let hi = _mm256_permute2f128_ps(h0123, h4567, 0x31);
    let s = _mm256_mul_ps(_mm256_add_ps(lo, hi), _mm256_set1_ps(scale));
    // SAFETY: out has at least 8 elements (checked above).
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) }
}

/// Scores of query row `q` against rows `j0..j1` of `w.keys` into `out[..j1 - j0]`
/// (rounded up to 8; `out` has room).
#[target_feature(enable = "avx2,fma")]
pub(super) fn scores(
    q: &[f32],
    w: &Widened,
    hd: usize,
    (j0, j1): (usize, usize),
    scale: f32,
    out: &mut [f32],
) {
    for (g, j) in (j0..j1).step_by(8).enumerate() {
        scores8(q, &w.keys[j * hd..], hd, scale, &mut out[8 * g..]);
    }
}

/// `out[p] += Σ_j probs[p][j - j0] · values[j]` for two or one pairs `p`, over keys `j0..j1`,
/// dimensions `d0..d0 + 8·NV`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn weighted<const NV: usize, const P: usize>(
    probs: [&[f32]; P],
    values: &[f32],
    hd: usize,
    (j0, j1): (usize, usize),
    d0: usize,
    out: [&mut [f32]; P],
) {
    assert!(values.len() >= j1 * hd && d0 + 8 * NV <= hd);
    assert!(probs.iter().all(|p| p.len() >= j1 - j0));
    let mut acc = [[_mm256_setzero_ps(); NV]; P];
    for j in j0..j1 {
        let row = j * hd + d0;
        let v: [__m256; NV] = std::array::from_fn(|c| {
            // SAFETY: row + 8c + 8 <= j * hd + hd <= values.len() (checked above).
            unsafe { _mm256_loadu_ps(values.as_ptr().add(row + 8 * c)) }
        });
        for (a, pr) in acc.iter_mut().zip(probs) {
            let w = _mm256_set1_ps(pr[j - j0]);
            for (a, v) in a.iter_mut().zip(&v) {
                *a = _mm256_fmadd_ps(w, *v, *a);
            }
        }
    }
    for (o, a) in out.into_iter().zip(&acc) {
        assert!(o.len() >= d0 + 8 * NV);
        for (c, a) in a.iter().enumerate() {
            // SAFETY: d0 + 8c + 8 <= o.len() (checked above).
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(d0 + 8 * c), *a) }
        }
    }
}

/// Weighted values of every pair: `out` `(pairs, hd)`, `probs` `(pairs, stride)` over keys
/// `j0..j1` (zero where a pair may not see the key).
#[target_feature(enable = "avx2,fma")]
pub(super) fn weighted_all(
    probs: &[f32],
    stride: usize,
    values: &[f32],
    hd: usize,
    keys: (usize, usize),
    out: &mut [f32],
) {
    let pairs = out.len() / hd;
    let prob = |p: usize| &probs[p * stride..(p + 1) * stride];
    let mut outs = out.chunks_exact_mut(hd);
    let mut p = 0;
    while p < pairs {
        let two = p + 1 < pairs;
        let o0 = outs.next().expect("pair");
        let mut d0 = 0;
        if two {
            let o1 = outs.next().expect("second pair");
            let pr = [prob(p), prob(p + 1)];
            while d0 + 64 <= hd {
                weighted::<8, 2>(pr, values, hd, keys, d0, [&mut *o0, &mut *o1]);
                d0 += 64;
            }
            while d0 < hd {
                weighted::<1, 2>(pr, values, hd, keys, d0, [&mut *o0, &mut *o1]);
                d0 += 8;
            }
        } else {
            while d0 + 64 <= hd {
                weighted::<8, 1>([prob(p)], values, hd, keys, d0, [&mut *o0]);
                d0 += 64;
            }
            while d0 < hd {
                weighted::<1, 1>([prob(p)], values, hd, keys, d0, [&mut *o0]);
                d0 += 8;
            }
        }
        p += if two { 2 } else { 1 };
    }
}
