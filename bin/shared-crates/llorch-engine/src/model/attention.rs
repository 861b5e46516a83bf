//! Attention on the CPU with a fixed order of arithmetic per query row.
//!
//! A row's result depends only on its query and the keys and values it may see, never on how
//! many rows are computed together. General matrix-multiply kernels pick different code paths
//! (and summation orders) for different row counts, and this engine's 8-bit activation rounding
//! turns those last-bit differences into visible ones (up to ~1 logit measured on SmolLM2 between
//! a 32-token prefill and the same prompt as 31 + 1). With this kernel a prompt gives the same
//! outputs whether it is prefilled whole, in chunks between other jobs' decode steps, or after a
//! prefix reused from the prompt cache, and a batched decode step gives each job what it gets
//! alone.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Storage, Tensor, WithDType};
use half::f16;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Below this many multiply-adds a call runs on one thread (rayon's overhead would dominate).
const PARALLEL_WORK: usize = 1 << 16;

/// Borrow a CPU tensor's elements of type `E` and its (start offset, strides).
pub(super) fn with_slice<E: WithDType, T>(
    t: &Tensor,
    f: impl FnOnce(&[E], usize, &[usize]) -> Result<T>,
) -> Result<T> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(cpu.as_slice::<E>()?, layout.start_offset(), layout.stride()),
        _ => bail!("cpu attention called with a tensor on another device"),
    }
}

/// A cache element type: rows are widened to f32 before use.
trait KvElem: WithDType + Sync {
    fn widen(src: &[Self], dst: &mut [f32]);
}

impl KvElem for f32 {
    fn widen(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

impl KvElem for f16 {
    fn widen(src: &[f16], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
}

/// Dot product in a fixed order: eight lane sums, then those summed pairwise.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    for (l, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        acc[l] = x.mul_add(*y, acc[l]);
    }
    fold8(acc)
}

/// Sum of eight lanes, pairwise, in a fixed order.
#[inline]
fn fold8(acc: [f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Sum in a fixed order (eight lane sums, then pairwise): vectorizes, and the result depends
/// only on the values.
#[inline]
fn sum(s: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut c = s.chunks_exact(8);
    for x in &mut c {
        for l in 0..8 {
            acc[l] += x[l];
        }
    }
    for (l, x) in c.remainder().iter().enumerate() {
        acc[l] += x;
    }
    fold8(acc)
}

/// Largest element (exact whatever the order, so lanes are free to vectorize).
#[inline]
fn max(s: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut c = s.chunks_exact(8);
    for x in &mut c {
        for l in 0..8 {
            acc[l] = if x[l] > acc[l] { x[l] } else { acc[l] };
        }
    }
    for (l, x) in c.remainder().iter().enumerate() {
        acc[l] = acc[l].max(*x);
    }
    acc.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// Softmax attention of `n` query rows at absolute positions `pos..pos+n`.
///
/// - `q`: `(n_head, n, head_dim)`, contiguous.
/// - `k`, `v`: `(n_kv_head, pos + n, head_dim)` views of the cache (rows contiguous), F16 or
///   F32.
/// - `window`: a sliding-window layer sees only the last `window` positions.
///
/// Returns `(n, n_head * head_dim)`.
pub fn attend_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pos: usize,
    scale: f32,
    window: Option<usize>,
) -> Result<Tensor> {
    let (nh, n, hd) = q.dims3()?;
    let (nkv, t, hd_k) = k.dims3()?;
    anyhow::ensure!(
        hd == hd_k && t == pos + n && nh % nkv == 0,
        "attention shapes: q {:?}, k {:?}, pos {pos}",
        q.dims(),
        k.dims()
    );
    let q = q.contiguous()?;
    let out = match k.dtype() {
        DType::F16 => attend_typed::<f16>(&q, k, v, pos, scale, window)?,
        DType::F32 => attend_typed::<f32>(&q, k, v, pos, scale, window)?,
        other => bail!("cpu attention: unsupported cache type {other:?}"),
    };
    Ok(Tensor::from_vec(out, (n, nh * hd), &Device::Cpu)?)
}

/// Query rows handled together: each cache row is widened once for all of them and every
/// head sharing its KV head (independent dot products keep the FMA units busy).
const ROW_BLOCK: usize = 4;

/// Shapes and views one task needs.
struct Views<'a, E> {
    qs: &'a [f32],
    ks: &'a [E],
    vs: &'a [E],
    /// element offset of (kv head 0, position 0) and the (head, position) strides
    k_at: (usize, usize, usize),
    v_at: (usize, usize, usize),
    n: usize,
    hd: usize,
    rep: usize,
    pos: usize,
    scale: f32,
    window: Option<usize>,
}

impl<E: KvElem> Views<'_, E> {
    /// Attention of query rows `rows` for the heads of KV head `kv`; `part` receives
    /// `(row, rep * hd)`.
    fn block(&self, kv: usize, rows: std::ops::Range<usize>, part: &mut [f32]) {
        let (hd, rep) = (self.hd, self.rep);
        let qpos = |i: usize| self.pos + i;
        let lo = |i: usize| self.window.map_or(0, |w| (qpos(i) + 1).saturating_sub(w));
        let (jlo, jhi) = (lo(rows.start), qpos(rows.end - 1));
        let span = jhi + 1 - jlo;
        let qrow = |i: usize, h: usize| &self.qs[((kv * rep + h) * self.n + i) * hd..][..hd];
        let krow = |j: usize| &self.ks[self.k_at.0 + kv * self.k_at.1 + j * self.k_at.2..][..hd];
        let vrow = |j: usize| &self.vs[self.v_at.0 + kv * self.v_at.1 + j * self.v_at.2..][..hd];
        // query row i sees key j
        let sees = |i: usize, j: usize| lo(i) <= j && j <= qpos(i);
        let mut row = vec![0f32; hd];
        // scores of (row, head) over the block's keys; each row uses its own visible range
        let mut scores = vec![0f32; rows.len() * rep * span];
        for j in jlo..=jhi {
            E::widen(krow(j), &mut row);
            for (r, i) in rows.clone().enumerate() {
                if !sees(i, j) {
                    continue;
                }
                for h in 0..rep {
                    scores[(r * rep + h) * span + j - jlo] = dot(qrow(i, h), &row) * self.scale;
                }
            }
        }
        let visible = |r: usize, i: usize, h: usize| {
            let base = (r * rep + h) * span;
            base + lo(i) - jlo..base + qpos(i) + 1 - jlo
        };
        let mut inv = vec![0f32; rows.len() * rep];
        for (r, i) in rows.clone().enumerate() {
            for h in 0..rep {
                let s = &mut scores[visible(r, i, h)];
                let m = max(s);
                s.iter_mut().for_each(|x| *x = super::vecmath::exp(*x - m));
                inv[r * rep + h] = 1.0 / sum(s);
            }
        }
        part.fill(0.0);
        for j in jlo..=jhi {
            E::widen(vrow(j), &mut row);
            for (r, i) in rows.clone().enumerate() {
                if !sees(i, j) {
                    continue;
                }
                for h in 0..rep {
                    let p = scores[(r * rep + h) * span + j - jlo];
                    let o = &mut part[(r * rep + h) * hd..][..hd];
                    for (od, vd) in o.iter_mut().zip(&row) {
                        *od = p.mul_add(*vd, *od);
                    }
                }
            }
        }
        for (o, s) in part.chunks_exact_mut(hd).zip(&inv) {
            o.iter_mut().for_each(|x| *x *= s);
        }
    }

    /// [`Views::block`] with the AVX2 kernels, on keys and values widened to f32 (`w`).
    #[cfg(target_arch = "x86_64")]
    fn block_avx2(&self, kv: usize, rows: std::ops::Range<usize>, part: &mut [f32], w: &Widened) {
        let (hd, rep) = (self.hd, self.rep);
        let qpos = |i: usize| self.pos + i;
        let lo = |i: usize| self.window.map_or(0, |w| (qpos(i) + 1).saturating_sub(w));
        let (jlo, jhi) = (lo(rows.start), qpos(rows.end - 1));
        let keys = (jlo - w.first, jhi + 1 - w.first);
        let stride = (jhi + 1 - jlo).next_multiple_of(8);
        let qrow = |i: usize, h: usize| &self.qs[((kv * rep + h) * self.n + i) * hd..][..hd];
        let mut probs = vec![0f32; rows.len() * rep * stride];
        let mut inv = vec![0f32; rows.len() * rep];
        for (r, i) in rows.clone().enumerate() {
            for h in 0..rep {
                let p = &mut probs[(r * rep + h) * stride..][..stride];
                // SAFETY: callers run this only where `qmatmul::available()` found AVX2 and FMA.
                unsafe { avx2::scores(qrow(i, h), w, hd, keys, self.scale, p) };
                let visible = lo(i) - jlo..qpos(i) + 1 - jlo;
                let s = &mut p[visible.clone()];
                let m = max(s);
                s.iter_mut().for_each(|x| *x = super::vecmath::exp(*x - m));
                inv[r * rep + h] = 1.0 / sum(s);
                p[..visible.start].fill(0.0);
                p[visible.end..].fill(0.0);
            }
        }
        let part = &mut part[..rows.len() * rep * hd];
        // SAFETY: as above.
        unsafe { avx2::weighted_all(&probs, stride, w.values, hd, keys, part) };
        for (o, s) in part.chunks_exact_mut(hd).zip(&inv) {
            o.iter_mut().for_each(|x| *x *= s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
use avx2::Widened;

/// Keys and values of every KV head from position `first` on, widened to f32:
/// `(nkv, t - first + 8, hd)` each (8 zero rows past the end, for the score kernel's groups of
/// eight).
#[cfg(target_arch = "x86_64")]
fn widen_all<E: KvElem>(
    views: &Views<E>,
    nkv: usize,
    t: usize,
    first: usize,
) -> (Vec<f32>, Vec<f32>) {
    let hd = views.hd;
    let per_head = (t - first + 8) * hd;
    let mut keys = vec![0f32; nkv * per_head];
    let mut values = vec![0f32; nkv * per_head];
    for kv in 0..nkv {
        for j in first..t {
            let at = |(o, sh, sj): (usize, usize, usize)| o + kv * sh + j * sj;
            let dst = kv * per_head + (j - first) * hd;
            E::widen(&views.ks[at(views.k_at)..][..hd], &mut keys[dst..dst + hd]);
            E::widen(
                &views.vs[at(views.v_at)..][..hd],
                &mut values[dst..dst + hd],
            );
        }
    }
    (keys, values)
}

fn attend_typed<E: KvElem>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pos: usize,
    scale: f32,
    window: Option<usize>,
) -> Result<Vec<f32>> {
    let (nh, n, hd) = q.dims3()?;
    let (nkv, t, _) = k.dims3()?;
    let rep = nh / nkv;
    let blocks = n.div_ceil(ROW_BLOCK);
    let part_len = ROW_BLOCK * rep * hd;
    // One task per (block of query rows, KV head), each writing its own part; the parts are
    // then placed in the output rows. Each row's arithmetic is the same whatever the blocks.
    let mut parts = vec![0f32; blocks * nkv * part_len];
    with_slice::<f32, _>(q, |qs, q0, _| {
        with_slice::<E, _>(k, |ks, k0, kst| {
            with_slice::<E, _>(v, |vs, v0, vst| {
                anyhow::ensure!(kst[2] == 1 && vst[2] == 1, "cache rows must be contiguous");
                let views = Views {
                    qs: &qs[q0..],
                    ks,
                    vs,
                    k_at: (k0, kst[0], kst[1]),
                    v_at: (v0, vst[0], vst[1]),
                    n,
                    hd,
                    rep,
                    pos,
                    scale,
                    window,
                };
                #[cfg(target_arch = "x86_64")]
                // no query row of this call sees a key before the first row's window
                #[cfg(target_arch = "x86_64")]
                let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                #[cfg(target_arch = "x86_64")]
                let widened = (hd % 8 == 0 && super::qmatmul::available())
                    .then(|| widen_all(&views, nkv, t, first));
                let task = |(idx, part): (usize, &mut [f32])| {
                    let (b, kv) = (idx / nkv, idx % nkv);
                    let rows = b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(n);
                    #[cfg(target_arch = "x86_64")]
                    if let Some((keys, values)) = &widened {
                        let per_head = (t - first + 8) * hd;
                        let w = Widened {
                            keys: &keys[kv * per_head..][..per_head],
                            values: &values[kv * per_head..][..per_head],
                            first,
                        };
                        return views.block_avx2(kv, rows, part, &w);
                    }
                    views.block(kv, rows, part);
                };
                if n * nh * t * hd >= PARALLEL_WORK {
                    parts.par_chunks_mut(part_len).enumerate().for_each(task);
                } else {
                    parts.chunks_mut(part_len).enumerate().for_each(task);
                }
                Ok(())
            })
        })
    })?;
    let mut out = vec![0f32; n * nh * hd];
    for (idx, part) in parts.chunks(part_len).enumerate() {
        let (b, kv) = (idx / nkv, idx % nkv);
        for (r, i) in (b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(n)).enumerate() {
            out[(i * nh + kv * rep) * hd..][..rep * hd]
                .copy_from_slice(&part[r * rep * hd..][..rep * hd]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(shape: (usize, usize, usize), seed: u32) -> Tensor {
        let n = shape.0 * shape.1 * shape.2;
        let v: Vec<f32> = (0..n as u32)
            .map(|i| {
                ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn rows_do_not_depend_on_how_many_are_computed_together() {
        let (nh, nkv, hd, t) = (4, 2, 16, 11);
        let q = rand((nh, t, hd), 1);
        let k = rand((nkv, t, hd), 2);
        let v = rand((nkv, t, hd), 3);
        for window in [None, Some(5)] {
            let whole: Vec<Vec<f32>> = attend_cpu(&q, &k, &v, 0, 0.25, window)
                .unwrap()
                .to_vec2()
                .unwrap();
            // the same rows in chunks of every size, each chunk against the cache up to its end
            for chunk in 1..t {
                let mut start = 0;
                while start < t {
                    let len = chunk.min(t - start);
                    let qc = q.narrow(1, start, len).unwrap();
                    let kc = k.narrow(1, 0, start + len).unwrap();
                    let vc = v.narrow(1, 0, start + len).unwrap();
                    let got: Vec<Vec<f32>> = attend_cpu(&qc, &kc, &vc, start, 0.25, window)
                        .unwrap()
                        .to_vec2()
                        .unwrap();
                    for (r, row) in got.iter().enumerate() {
                        assert_eq!(
                            row,
                            &whole[start + r],
                            "row {} in chunks of {chunk}",
                            start + r
                        );
                    }
                    start += len;
                }
            }
        }
    }

    #[test]
    fn matches_plain_softmax_attention_with_causal_and_window_masks() {
        // head sizes 8 and 72 (one 64-wide slice of the value kernel and one 8-wide), an odd
        // number of heads per KV head (a pair of heads and a single one)
        for (nh, hd, t) in [(2, 8, 6), (3, 72, 13)] {
            plain_softmax_case(nh, hd, t);
        }
    }

    fn plain_softmax_case(nh: usize, hd: usize, t: usize) {
        let nkv = 1;
        let q = rand((nh, t, hd), 4);
        let k = rand((nkv, t, hd), 5);
        let v = rand((nkv, t, hd), 6);
        for window in [None, Some(3)] {
            let got: Vec<Vec<f32>> = attend_cpu(&q, &k, &v, 0, 0.5, window)
                .unwrap()
                .to_vec2()
                .unwrap();
            type Rows = Vec<Vec<Vec<f32>>>;
            let q3: Rows = q.to_vec3().unwrap();
            let k3: Rows = k.to_vec3().unwrap();
            let v3: Rows = v.to_vec3().unwrap();
            for i in 0..t {
                for h in 0..nh {
                    let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
                    let s: Vec<f64> = (lo..=i)
                        .map(|j| {
                            0.5 * q3[h][i]
                                .iter()
                                .zip(&k3[0][j])
                                .map(|(a, b)| (a * b) as f64)
                                .sum::<f64>()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        let want: f64 = (lo..=i)
                            .zip(&e)
                            .map(|(j, p)| p / z * v3[0][j][d] as f64)
                            .sum();
                        let g = got[i][h * hd + d] as f64;
                        assert!(
                            (g - want).abs() < 1e-5,
                            "row {i} head {h} dim {d}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
