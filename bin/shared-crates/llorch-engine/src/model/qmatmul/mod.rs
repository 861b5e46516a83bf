//! Quantized matrix multiplication on the CPU, written for this engine: Q4_1, Q5_0, Q8_0, Q4_K,
//! Q5_K and Q6_K weights run as stored (the stored bits, only reordered, and for Q5_K scales
//! widened and unpacked, at load), with llama.cpp's arithmetic.
//!
//! Activations are quantized per row the way llama.cpp does for the weight type: 32-value
//! blocks with a scale and the block sum ([`BlockQ8`]) for the 32-value types, 256-value
//! super-blocks with per-16 sums ([`BlockQ8K`]) for the k-quants. Products are integer inside a
//! block, f32 across blocks. Each type has a scalar reference and an AVX2/FMA kernel, chosen at
//! run time. Q4_1, Q5_0, Q8_0, Q4_K and Q6_K are stored in groups of eight rows ([`group`]): one
//! VNNI instruction then adds four values' products for eight rows at once, and one float step
//! per block serves eight rows. Q5_K goes row by row ([`QMatrix`]), an unpacked weight block
//! reused across up to eight activation rows. Work is split over the rayon pool by output
//! columns; rayon's workers sleep instead of spinning, so a busy machine slows the engine down
//! instead of collapsing it.

/// The AVX2 kernels of a weight type run row by row (its module's `avx2::dot`, entered only
/// after [`available`] found AVX2, FMA and F16C).
macro_rules! kernel_items {
    () => {
        #[cfg(target_arch = "x86_64")]
        fn simd() -> Option<super::Kernels<Self>> {
            super::available().then_some(super::Kernels {
                // SAFETY: `available()` found AVX2, FMA and F16C.
                dot1: |w, x| unsafe { avx2::dot::<1>(w, [x])[0] },
                // SAFETY: as above.
                dot4: |w, x| unsafe { avx2::dot::<4>(w, x) },
                // SAFETY: as above.
                dot8: |w, x| unsafe { avx2::dot::<8>(w, x) },
            })
        }
    };
}

/// The AVX2 kernels of a row-group type (its module's `avx2::dot`, or the named module's, entered
/// only after [`available`] found AVX2, FMA and F16C).
macro_rules! group_kernel_items {
    () => {
        group_kernel_items!(avx2);
    };
    ($module:ident) => {
        fn simd() -> Option<super::group::GroupKernels<Self>> {
            #[cfg(target_arch = "x86_64")]
            if super::available() {
                return Some(super::group::GroupKernels {
                    // SAFETY: `available()` found AVX2, FMA and F16C.
                    dot1: |w, x| unsafe { $module::dot::<1>(w, [x])[0] },
                    // SAFETY: as above.
                    dot4: |w, x| unsafe { $module::dot::<4>(w, x) },
                });
            }
            None
        }
    };
}

mod act;
mod buf;
mod group;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_k;
mod q6_k;
mod q8_0;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(test)]
mod tests;

use anyhow::{bail, ensure, Context, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

pub use act::{ActBlock, BlockQ8, BlockQ8K};
pub use group::{GroupMatrix, RowGroup};
pub use q4_1::{BlockQ4_1, GroupQ4_1};
pub use q4_k::{BlockQ4K, GroupQ4K};
pub use q5_0::{BlockQ5_0, GroupQ5_0};
pub use q5_k::BlockQ5K;
pub use q6_k::{BlockQ6K, GroupQ6K};
pub use q8_0::{BlockQ8_0, GroupQ8_0};

/// Four activation rows of the same length.
pub type Rows4<'a, A> = [&'a [A]; 4];
/// Eight activation rows of the same length.
pub type Rows8<'a, A> = [&'a [A]; 8];

/// The dot products of one weight type, chosen once per matmul.
#[derive(Clone, Copy)]
pub struct Kernels<B: WeightBlock> {
    /// One weight row with one activation row.
    pub dot1: fn(&[B], &[B::Act]) -> f32,
    /// One weight row with four activation rows.
    pub dot4: for<'a> fn(&[B], Rows4<'a, B::Act>) -> [f32; 4],
    /// One weight row with eight activation rows. A row's result is the same, bit for bit,
    /// whichever of the three computes it.
    pub dot8: for<'a> fn(&[B], Rows8<'a, B::Act>) -> [f32; 8],
}

/// A weight block type the kernels run.
pub trait WeightBlock: Copy + Send + Sync + 'static {
    /// The GGUF type it reads.
    const DTYPE: GgmlDType;
    /// Bytes per block in GGUF.
    const BYTES: usize;
    /// Values per block.
    const QK: usize;
    /// The activation blocks it multiplies with.
    type Act: ActBlock;
    /// Parse one block from its GGUF bytes.
    fn read(b: &[u8]) -> Self;
    /// The block's `QK` values as f32.
    fn dequant(&self, out: &mut [f32]);
    /// Reference dot product of a weight row with one activation row (integer per block).
    fn dot_scalar(w: &[Self], x: &[Self::Act]) -> f32;
    /// The AVX2/FMA kernels, where this CPU has them.
    fn simd() -> Option<Kernels<Self>> {
        None
    }
    /// The fastest kernels this CPU runs: [`WeightBlock::simd`], else the scalar reference.
    fn kernels() -> Kernels<Self> {
        Self::simd().unwrap_or(Kernels {
            dot1: Self::dot_scalar,
            dot4: scalar4::<Self>,
            dot8: scalar8::<Self>,
        })
    }
}

fn scalar4<B: WeightBlock>(w: &[B], x: [&[B::Act]; 4]) -> [f32; 4] {
    x.map(|x| B::dot_scalar(w, x))
}

fn scalar8<B: WeightBlock>(w: &[B], x: [&[B::Act]; 8]) -> [f32; 8] {
    x.map(|x| B::dot_scalar(w, x))
}

/// True when this CPU has the AVX2/FMA kernels (the weight loader uses the engine's kernels
/// only then; elsewhere candle's).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A quantized weight matrix `(n, k)` used as `y = x · Wᵀ`.
pub struct QMatrix<B: WeightBlock> {
    n: usize,
    k: usize,
    blocks: Vec<B>,
}

impl<B: WeightBlock> QMatrix<B> {
    /// Take the blocks of a `QTensor` of shape `(n, k)` and type `B::DTYPE`.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        ensure!(q.dtype() == B::DTYPE, "not a {:?} tensor", B::DTYPE);
        let (n, k) = q.shape().dims2()?;
        ensure!(
            k.is_multiple_of(B::QK),
            "row length {k} is not a multiple of {}",
            B::QK
        );
        let data = q.data()?;
        ensure!(
            data.len() == n * k / B::QK * B::BYTES,
            "{:?} data size mismatch",
            B::DTYPE
        );
        let blocks = data.chunks_exact(B::BYTES).map(B::read).collect();
        Ok(Self { n, k, blocks })
    }

    /// Read `n × k` weights of type `B::DTYPE` straight from a reader (a GGUF file positioned
    /// at the tensor's data), converting a slice at a time: no second copy of the tensor.
    pub fn from_reader(r: &mut impl std::io::Read, n: usize, k: usize) -> Result<Self> {
        ensure!(
            k.is_multiple_of(B::QK),
            "row length {k} is not a multiple of {}",
            B::QK
        );
        let total = n * k / B::QK;
        let mut blocks = Vec::with_capacity(total);
        let mut buf = vec![0u8; 1024 * B::BYTES];
        while blocks.len() < total {
            let count = (total - blocks.len()).min(1024);
            let bytes = &mut buf[..count * B::BYTES];
            r.read_exact(bytes)?;
            blocks.extend(bytes.chunks_exact(B::BYTES).map(B::read));
        }
        Ok(Self { n, k, blocks })
    }

    /// Rows `ids` dequantized, `(ids.len(), k)`: the embedding lookup of a tied table.
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        let kb = self.k / B::QK;
        let mut out = vec![0f32; ids.len() * self.k];
        for (r, &id) in ids.iter().enumerate() {
            let id = id as usize;
            ensure!(
                id < self.n,
                "token id {id} outside the embedding table ({} rows)",
                self.n
            );
            for (bi, b) in self.blocks[id * kb..(id + 1) * kb].iter().enumerate() {
                let o = r * self.k + bi * B::QK;
                b.dequant(&mut out[o..o + B::QK]);
            }
        }
        Ok(Tensor::from_vec(out, (ids.len(), self.k), &Device::Cpu)?)
    }

    /// Stack matrices with the same `k` along the output axis.
    pub fn concat(parts: Vec<QMatrix<B>>) -> Result<Self> {
        let k = parts.first().map(|p| p.k).unwrap_or(0);
        ensure!(
            parts.iter().all(|p| p.k == k),
            "{:?} concat: different row lengths",
            B::DTYPE
        );
        let n = parts.iter().map(|p| p.n).sum();
        let blocks = parts.into_iter().flat_map(|p| p.blocks).collect();
        Ok(Self { n, k, blocks })
    }

    /// Bytes the blocks hold.
    pub fn allocated_bytes(&self) -> usize {
        std::mem::size_of_val(self.blocks.as_slice())
    }

    /// `x` is `(m, k)` (or `(k,)`); returns `(m, n)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, B::kernels())
    }

    /// [`QMatrix::forward`] with the given kernels (tests run the scalar and SIMD ones).
    fn forward_with(&self, x: &Tensor, kern: Kernels<B>) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        ensure!(
            k == self.k,
            "{:?} matmul: input has {k} columns, weights {}",
            B::DTYPE,
            self.k
        );
        let m = x.elem_count() / k;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let kb = k / B::QK;
        let mut qx = vec![B::Act::ZERO; m * kb];
        qx.par_chunks_mut(kb)
            .zip(xs.par_chunks(k))
            .for_each(|(dst, src)| B::Act::quantize(src, dst));
        let mut out = vec![0f32; m * self.n];
        // Parallel over output columns; each task writes its own columns of every row. Inside a
        // task the activation rows go in tiles small enough to stay in L1 while every column of
        // the task passes over them (one pass per column over all rows would stream the whole
        // activation matrix from L2 once per column).
        let cols_per_task = 16usize;
        let row_tile = rows_per_tile(kb * std::mem::size_of::<B::Act>());
        let out_ptr = SendPtr(out.as_mut_ptr());
        let n = self.n;
        let (dot1, dot4, dot8) = (kern.dot1, kern.dot4, kern.dot8);
        (0..n.div_ceil(cols_per_task))
            .into_par_iter()
            .for_each(|t| {
                let p = &out_ptr;
                let row = |i: usize| &qx[i * kb..(i + 1) * kb];
                let put = |i: usize, j: usize, v: f32| {
                    debug_assert!(i < m && j < n);
                    // SAFETY: callers pass a column j of this task's (no other task writes it)
                    // and a row i < m, so i * n + j is inside `out`.
                    unsafe { *p.0.add(i * n + j) = v }
                };
                let cols = t * cols_per_task..((t + 1) * cols_per_task).min(n);
                for r0 in (0..m).step_by(row_tile) {
                    let r1 = (r0 + row_tile).min(m);
                    for j in cols.clone() {
                        let w = &self.blocks[j * kb..(j + 1) * kb];
                        let mut i = r0;
                        while i + 8 <= r1 {
                            let r = dot8(w, std::array::from_fn(|o| row(i + o)));
                            r.iter().enumerate().for_each(|(o, v)| put(i + o, j, *v));
                            i += 8;
                        }
                        while i + 4 <= r1 {
                            let r = dot4(w, std::array::from_fn(|o| row(i + o)));
                            r.iter().enumerate().for_each(|(o, v)| put(i + o, j, *v));
                            i += 4;
                        }
                        while i < r1 {
                            put(i, j, dot1(w, row(i)));
                            i += 1;
                        }
                    }
                }
            });
        let mut shape = dims;
        *shape.last_mut().unwrap() = self.n;
        Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
    }
}

/// Activation rows per tile: as many as fit in about 16 KiB (half of a typical L1 data cache),
/// a multiple of eight (the kernels' widest row group), at least eight.
fn rows_per_tile(row_bytes: usize) -> usize {
    const L1_SHARE: usize = 16 * 1024;
    (L1_SHARE / row_bytes.max(1) / 8 * 8).max(8)
}

struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint elements (see `forward_with`).
unsafe impl Sync for SendPtr {}

/// A weight matrix on one of the engine's kernels, whichever its type: the 32-value types as
/// row groups ([`GroupMatrix`]), the k-quants row by row ([`QMatrix`]).
pub enum OwnMatrix {
    Q4_1(GroupMatrix<GroupQ4_1>),
    Q5_0(GroupMatrix<GroupQ5_0>),
    Q8_0(GroupMatrix<GroupQ8_0>),
    Q4K(GroupMatrix<GroupQ4K>),
    Q5K(QMatrix<BlockQ5K>),
    Q6K(GroupMatrix<GroupQ6K>),
}

/// What [`OwnMatrix`] needs of each matrix type it holds.
trait Matmul: Sized {
    /// The GGUF type of the weights.
    const DTYPE: GgmlDType;
    fn concat(parts: Vec<Self>) -> Result<Self>;
    fn into_own(self) -> OwnMatrix;
    fn from_own(m: OwnMatrix) -> Option<Self>;
}

macro_rules! matmul_impl {
    ($variant:ident, $ty:ty, $dtype:expr) => {
        impl Matmul for $ty {
            const DTYPE: GgmlDType = $dtype;
            fn concat(parts: Vec<Self>) -> Result<Self> {
                <$ty>::concat(parts)
            }
            fn into_own(self) -> OwnMatrix {
                OwnMatrix::$variant(self)
            }
            fn from_own(m: OwnMatrix) -> Option<Self> {
                match m {
                    OwnMatrix::$variant(m) => Some(m),
                    _ => None,
                }
            }
        }
    };
}

matmul_impl!(Q4_1, GroupMatrix<GroupQ4_1>, GgmlDType::Q4_1);
matmul_impl!(Q5_0, GroupMatrix<GroupQ5_0>, GgmlDType::Q5_0);
matmul_impl!(Q8_0, GroupMatrix<GroupQ8_0>, GgmlDType::Q8_0);
matmul_impl!(Q4K, GroupMatrix<GroupQ4K>, GgmlDType::Q4K);
matmul_impl!(Q5K, QMatrix<BlockQ5K>, GgmlDType::Q5K);
matmul_impl!(Q6K, GroupMatrix<GroupQ6K>, GgmlDType::Q6K);

/// Run `$e` with `$M` bound to the matrix type of GGUF type `$dtype`, or `$none` for the types
/// without a kernel here.
macro_rules! with_matrix {
    ($dtype:expr, $M:ident => $e:expr, else $none:expr) => {
        match $dtype {
            GgmlDType::Q4_1 => {
                type $M = GroupMatrix<GroupQ4_1>;
                $e
            }
            GgmlDType::Q5_0 => {
                type $M = GroupMatrix<GroupQ5_0>;
                $e
            }
            GgmlDType::Q8_0 => {
                type $M = GroupMatrix<GroupQ8_0>;
                $e
            }
            GgmlDType::Q4K => {
                type $M = GroupMatrix<GroupQ4K>;
                $e
            }
            GgmlDType::Q5K => {
                type $M = QMatrix<BlockQ5K>;
                $e
            }
            GgmlDType::Q6K => {
                type $M = GroupMatrix<GroupQ6K>;
                $e
            }
            _ => $none,
        }
    };
}

/// Run `$e` on the matrix inside an [`OwnMatrix`].
macro_rules! each {
    ($own:expr, $m:ident => $e:expr) => {
        match $own {
            OwnMatrix::Q4_1($m) => $e,
            OwnMatrix::Q5_0($m) => $e,
            OwnMatrix::Q8_0($m) => $e,
            OwnMatrix::Q4K($m) => $e,
            OwnMatrix::Q5K($m) => $e,
            OwnMatrix::Q6K($m) => $e,
        }
    };
}

impl OwnMatrix {
    /// Whether GGUF type `dtype` has a kernel here.
    pub fn supports(dtype: GgmlDType) -> bool {
        with_matrix!(dtype, M => M::DTYPE == dtype, else false)
    }

    /// The matrix of a `QTensor`, or `None` for a type without a kernel here.
    pub fn from_qtensor(q: &QTensor) -> Result<Option<Self>> {
        with_matrix!(q.dtype(), M => Ok(Some(M::from_qtensor(q)?.into_own())), else Ok(None))
    }

    /// Read an `n × k` matrix of type `dtype` from a reader (a GGUF file positioned at the
    /// tensor's data), a few rows at a time: no second copy of the tensor.
    pub fn from_reader(
        r: &mut impl std::io::Read,
        dtype: GgmlDType,
        n: usize,
        k: usize,
    ) -> Result<Self> {
        with_matrix!(dtype, M => Ok(M::from_reader(r, n, k)?.into_own()),
            else bail!("no engine kernel for {dtype:?}"))
    }

    /// The GGUF type of the weights.
    pub fn dtype(&self) -> GgmlDType {
        fn of<M: Matmul>(_: &M) -> GgmlDType {
            M::DTYPE
        }
        each!(self, m => of(m))
    }

    /// Row length.
    pub fn k(&self) -> usize {
        each!(self, m => m.k)
    }

    /// Bytes the matrix holds in memory (its blocks, in the kernel's unpacked layout).
    pub fn allocated_bytes(&self) -> usize {
        each!(self, m => m.allocated_bytes())
    }

    /// Rows `ids` dequantized (see [`QMatrix::rows`]).
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        each!(self, m => m.rows(ids))
    }

    /// `x` `(…, k)` → `(…, n)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        each!(self, m => m.forward(x))
    }

    /// Stack matrices of one type and row length along the output axis.
    pub fn concat(parts: Vec<OwnMatrix>) -> Result<Self> {
        fn as_type<M: Matmul>(parts: Vec<OwnMatrix>) -> Result<OwnMatrix> {
            let mats = parts
                .into_iter()
                .map(|p| M::from_own(p).context("concat: different weight types"))
                .collect::<Result<Vec<_>>>()?;
            Ok(M::concat(mats)?.into_own())
        }
        let dtype = parts.first().context("concat: no matrices")?.dtype();
        with_matrix!(dtype, M => as_type::<M>(parts), else unreachable!("every OwnMatrix type has a kernel"))
    }
}
