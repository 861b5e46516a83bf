//! Per-sequence key/value cache: preallocated for the sequence's known length, written in place.
//! F16 on the engine's native CPU path (half the memory of F32, as llama.cpp keeps it; the
//! attention kernel widens each row on use), F32 on the device-generic path that GPUs run
//! (candle's attention there wants one dtype).

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};

/// K and V for every layer of one sequence, `(n_kv_head, capacity, head_dim)` each. The memory is
/// allocated zeroed, so untouched capacity costs address space, not resident memory.
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    capacity: usize,
    dtype: DType,
}

impl KvCache {
    /// An empty cache for `capacity` positions, its elements of type `dtype`.
    pub fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        capacity: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let mk = || Tensor::zeros((n_kv_head, capacity, head_dim), dtype, device);
        let mut k = Vec::with_capacity(n_layer);
        let mut v = Vec::with_capacity(n_layer);
        for _ in 0..n_layer {
            k.push(mk()?);
            v.push(mk()?);
        }
        Ok(Self {
            k,
            v,
            len: 0,
            capacity,
            dtype,
        })
    }

    /// Positions filled so far (= the absolute position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Memory one filled position takes (keys and values of every layer).
    pub fn bytes_per_position(&self) -> usize {
        self.k
            .iter()
            .chain(&self.v)
            .map(|t| t.elem_count() / self.capacity.max(1) * t.dtype().size_in_bytes())
            .sum()
    }

    /// Bytes the cache holds (every layer's K and V at full capacity, as allocated).
    pub fn allocated_bytes(&self) -> usize {
        self.k
            .iter()
            .chain(&self.v)
            .map(super::weights::tensor_bytes)
            .sum()
    }

    /// Positions this cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Write `k`/`v` (`(n_kv_head, n, head_dim)`) for `layer` at `pos..pos+n` and return views of
    /// positions `0..pos+n`.
    pub fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        pos: usize,
    ) -> Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        ensure!(
            pos + n <= self.capacity,
            "KV cache overflow: {pos} + {n} > {}",
            self.capacity
        );
        self.k[layer].slice_set(&k.to_dtype(self.dtype)?, 1, pos)?;
        self.v[layer].slice_set(&v.to_dtype(self.dtype)?, 1, pos)?;
        Ok((
            self.k[layer].narrow(1, 0, pos + n)?,
            self.v[layer].narrow(1, 0, pos + n)?,
        ))
    }

    /// Start as a copy of the first `n` positions of `src` (a finished sequence whose first `n`
    /// tokens equal this one's): every layer's keys and values, without recomputing them.
    pub fn copy_prefix(&mut self, src: &KvCache, n: usize) -> Result<()> {
        ensure!(
            n <= src.len && n <= self.capacity && self.k.len() == src.k.len(),
            "cannot reuse {n} cached positions (source holds {}, room for {})",
            src.len,
            self.capacity
        );
        for (dst, s) in self.k.iter_mut().zip(&src.k) {
            dst.slice_set(&s.narrow(1, 0, n)?.contiguous()?, 1, 0)?;
        }
        for (dst, s) in self.v.iter_mut().zip(&src.v) {
            dst.slice_set(&s.narrow(1, 0, n)?.contiguous()?, 1, 0)?;
        }
        self.len = n;
        Ok(())
    }

    /// Mark `n` more positions as filled (after every layer appended them).
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
