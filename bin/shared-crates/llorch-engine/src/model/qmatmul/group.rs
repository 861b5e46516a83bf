//! Row groups (Q4_1, Q5_0, Q8_0, Q4_K, Q6_K): the blocks of eight weight rows
//! at one block index are stored together, four values of each row side by side, so one
//! 32-byte vector holds four values of eight rows. One VNNI instruction multiplies that vector
//! with four activation values broadcast to every lane and adds the products into eight
//! per-row integer sums: eight dot products build up lane by lane, with no horizontal sums, one
//! float scale step per block for eight rows, and nothing to unpack per activation row.
//!
//! The bits are the stored ones, only reordered at load (a row's blocks are still readable, see
//! [`RowGroup::unpack`]). For the 32-value types a block's values are taken in eight chunks of
//! four: chunk `c` covers values `off(c)..off(c) + 4` with `off(c) = 4·(c % 4) + 16·(c / 4)`, so
//! chunks `p` and `p + 4` are the low and high nibbles of the same stored bytes `4p..4p + 4`.

use anyhow::{ensure, Result};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::buf::WeightBuf;
use super::{rows_per_tile, ActBlock, Rows4, SendPtr, WeightBlock};

/// The activation block type of a row group.
pub type Act<G> = <<G as RowGroup>::Block as WeightBlock>::Act;

/// Weight rows per group (the lanes of a 256-bit vector of f32 or i32).
pub const ROWS: usize = 8;

/// First value of chunk `c` in its block (see the module docs).
pub const fn off(c: usize) -> usize {
    4 * (c % 4) + 16 * (c / 4)
}

/// Eight weight rows with four activation rows.
pub type Dot4<G> = for<'a> fn(&[G], Rows4<'a, Act<G>>) -> [[f32; ROWS]; 4];

/// The dot products of one row-group type, chosen once per matmul.
pub struct GroupKernels<G: RowGroup> {
    /// Eight weight rows with one activation row.
    pub dot1: fn(&[G], &[Act<G>]) -> [f32; ROWS],
    /// Eight weight rows with four activation rows; a row's result is the same, bit for bit,
    /// as `dot1` gives it.
    pub dot4: Dot4<G>,
}

impl<G: RowGroup> Clone for GroupKernels<G> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<G: RowGroup> Copy for GroupKernels<G> {}

/// Eight rows' blocks at one block index, in a kernel's layout.
pub trait RowGroup: Copy + Send + Sync + 'static {
    /// The stored block type.
    type Block: WeightBlock;
    /// Interleave eight rows' blocks.
    fn pack(rows: &[Self::Block; ROWS]) -> Self;
    /// Row `i`'s block, as stored.
    fn unpack(&self, i: usize) -> Self::Block;
    /// Scalar reference: add this block's products with `a` to the eight row sums, in the
    /// SIMD kernels' order (integer block sum, then `sum·(d_w·d_x)` fused into the row's sum).
    fn accumulate(&self, a: &Act<Self>, acc: &mut [f32; ROWS]);
    /// The AVX2/FMA kernels, where this CPU has them.
    fn simd() -> Option<GroupKernels<Self>>;
    /// The fastest kernels this CPU runs.
    fn kernels() -> GroupKernels<Self> {
        Self::simd().unwrap_or(GroupKernels {
            dot1: |w, x| scalar::<Self, 1>(w, [x])[0],
            dot4: scalar::<Self, 4>,
        })
    }
}

/// The scalar reference of a group against `R` activation rows.
pub fn scalar<G: RowGroup, const R: usize>(w: &[G], x: [&[Act<G>]; R]) -> [[f32; ROWS]; R] {
    std::array::from_fn(|r| {
        let mut acc = [0f32; ROWS];
        for (g, a) in w.iter().zip(x[r]) {
            g.accumulate(a, &mut acc);
        }
        acc
    })
}

/// A weight matrix `(n, k)` stored as row groups (`n` padded to a multiple of eight with
/// all-zero rows, whose results are dropped).
pub struct GroupMatrix<G: RowGroup> {
    pub(super) n: usize,
    pub(super) k: usize,
    /// Group `g`'s block `b` at `g · k / QK + b`.
    groups: WeightBuf<G>,
}

impl<G: RowGroup> GroupMatrix<G> {
    /// Build from a source of rows: `next_row` fills one row's `k / QK` blocks at a time, so a
    /// reader never holds more than eight rows beside the groups.
    fn from_rows(
        n: usize,
        k: usize,
        mut next_row: impl FnMut(&mut [G::Block]) -> Result<()>,
    ) -> Result<Self> {
        let qk = G::Block::QK;
        ensure!(
            k.is_multiple_of(qk),
            "row length {k} is not a multiple of {qk}"
        );
        let kb = k / qk;
        let zero = G::Block::read(&vec![0u8; G::Block::BYTES]);
        let mut groups = WeightBuf::with_capacity(n.div_ceil(ROWS) * kb);
        let mut rows = vec![zero; ROWS * kb];
        for g in 0..n.div_ceil(ROWS) {
            for (i, row) in rows.chunks_exact_mut(kb).enumerate() {
                if g * ROWS + i < n {
                    next_row(row)?;
                } else {
                    row.fill(zero);
                }
            }
            groups.extend((0..kb).map(|b| G::pack(&std::array::from_fn(|i| rows[i * kb + b]))));
        }
        Ok(Self { n, k, groups })
    }

    /// The blocks of a `QTensor` of shape `(n, k)` and type `G::Block::DTYPE`.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        let dtype = G::Block::DTYPE;
        ensure!(q.dtype() == dtype, "not a {dtype:?} tensor");
        let (n, k) = q.shape().dims2()?;
        let data = q.data()?;
        let row_bytes = k / G::Block::QK * G::Block::BYTES;
        ensure!(data.len() == n * row_bytes, "{dtype:?} data size mismatch");
        let mut rows = data.chunks_exact(row_bytes.max(1));
        Self::from_rows(n, k, |dst| {
            let src = rows.next().expect("n rows");
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(G::Block::BYTES)) {
                *d = G::Block::read(s);
            }
            Ok(())
        })
    }

    /// Read `n × k` weights straight from a reader positioned at the tensor's data.
    pub fn from_reader(r: &mut impl std::io::Read, n: usize, k: usize) -> Result<Self> {
        let mut buf = vec![0u8; k / G::Block::QK * G::Block::BYTES];
        Self::from_rows(n, k, |dst| {
            r.read_exact(&mut buf)?;
            for (d, s) in dst.iter_mut().zip(buf.chunks_exact(G::Block::BYTES)) {
                *d = G::Block::read(s);
            }
            Ok(())
        })
    }

    /// Row `j`'s blocks, as stored.
    fn row(&self, j: usize) -> impl Iterator<Item = G::Block> + '_ {
        let kb = self.k / G::Block::QK;
        let g = j / ROWS;
        self.groups[g * kb..(g + 1) * kb]
            .iter()
            .map(move |b| b.unpack(j % ROWS))
    }

    /// Bytes the groups hold.
    pub fn allocated_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.groups)
    }

    /// Rows `ids` dequantized, `(ids.len(), k)`: the embedding lookup of a tied table.
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        let qk = G::Block::QK;
        let mut out = vec![0f32; ids.len() * self.k];
        for (dst, &id) in out.chunks_exact_mut(self.k.max(1)).zip(ids) {
            let id = id as usize;
            ensure!(
                id < self.n,
                "token id {id} outside the embedding table ({} rows)",
                self.n
            );
            for (o, b) in dst.chunks_exact_mut(qk).zip(self.row(id)) {
                b.dequant(o);
            }
        }
        Ok(Tensor::from_vec(out, (ids.len(), self.k), &Device::Cpu)?)
    }

    /// Stack matrices with the same `k` along the output axis (regrouped at the seams).
    pub fn concat(parts: Vec<Self>) -> Result<Self> {
        let k = parts.first().map(|p| p.k).unwrap_or(0);
        ensure!(
            parts.iter().all(|p| p.k == k),
            "{:?} concat: different row lengths",
            G::Block::DTYPE
        );
        if parts.iter().all(|p| p.n.is_multiple_of(ROWS)) {
            let n = parts.iter().map(|p| p.n).sum();
            let mut groups = WeightBuf::with_capacity(parts.iter().map(|p| p.groups.len()).sum());
            for p in &parts {
                groups.extend(p.groups.iter().copied());
            }
            return Ok(Self { n, k, groups });
        }
        let n = parts.iter().map(|p| p.n).sum();
        let mut rows = parts.iter().flat_map(|p| (0..p.n).map(move |j| p.row(j)));
        Self::from_rows(n, k, |dst| {
            for (d, b) in dst.iter_mut().zip(rows.next().expect("n rows")) {
                *d = b;
            }
            Ok(())
        })
    }

    /// `x` is `(m, k)` (or `(k,)`); returns `(m, n)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, G::kernels())
    }

    /// [`GroupMatrix::forward`] with the given kernels (tests run the scalar and SIMD ones).
    pub(super) fn forward_with(&self, x: &Tensor, kern: GroupKernels<G>) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        ensure!(
            k == self.k,
            "{:?} matmul: input has {k} columns, weights {}",
            G::Block::DTYPE,
            self.k
        );
        let m = x.elem_count() / k.max(1);
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let kb = k / G::Block::QK;
        let mut qx = vec![Act::<G>::ZERO; m * kb];
        qx.par_chunks_mut(kb.max(1))
            .zip(xs.par_chunks(k.max(1)))
            .for_each(|(dst, src)| Act::<G>::quantize(src, dst));
        let n = self.n;
        let mut out = vec![0f32; m * n];
        // Parallel over groups of output columns; each task writes its own columns of every
        // row, taking the activation rows in tiles that stay in L1 while its groups pass over
        // them.
        const GROUPS_PER_TASK: usize = 2;
        let row_tile = rows_per_tile(kb * std::mem::size_of::<Act<G>>());
        let out_ptr = SendPtr(out.as_mut_ptr());
        let (dot1, dot4) = (kern.dot1, kern.dot4);
        let n_groups = n.div_ceil(ROWS);
        (0..n_groups.div_ceil(GROUPS_PER_TASK))
            .into_par_iter()
            .for_each(|t| {
                let p = &out_ptr;
                let row = |i: usize| &qx[i * kb..(i + 1) * kb];
                let put = |i: usize, g: usize, v: &[f32; ROWS]| {
                    let j0 = g * ROWS;
                    let width = ROWS.min(n - j0);
                    debug_assert!(i < m);
                    // SAFETY: group g belongs to this task (no other task writes columns
                    // j0..j0 + width) and i < m, so the range lies inside `out`.
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p.0.add(i * n + j0), width) }
                };
                let gs = t * GROUPS_PER_TASK..((t + 1) * GROUPS_PER_TASK).min(n_groups);
                for r0 in (0..m).step_by(row_tile) {
                    let r1 = (r0 + row_tile).min(m);
                    for g in gs.clone() {
                        let w = &self.groups[g * kb..(g + 1) * kb];
                        let mut i = r0;
                        while i + 4 <= r1 {
                            let r = dot4(w, std::array::from_fn(|o| row(i + o)));
                            r.iter().enumerate().for_each(|(o, v)| put(i + o, g, v));
                            i += 4;
                        }
                        while i < r1 {
                            put(i, g, &dot1(w, row(i)));
                            i += 1;
                        }
                    }
                }
            });
        let mut shape = dims;
        *shape.last_mut().unwrap() = n;
        Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
    }
}
