//! Memory for weight matrices. Decode streams every matrix from memory once per token; with
//! 4 KiB pages that costs a TLB miss (a nested page walk on a VM) per page and stops the hardware
//! prefetcher at every page boundary. Matrices of [`HUGE_MIN`] bytes or more therefore live in
//! their own anonymous mapping, aligned to 2 MiB and advised for transparent huge pages (on
//! Linux; elsewhere, and for smaller matrices, on the heap). Measured on the 2-core VM: Gemma 3's
//! 178 MB output matrix reads at ~40 GB/s instead of ~26.

/// Matrices at least this large go on huge pages (at most one partly used 2 MiB page is lost,
/// under a quarter of the matrix).
pub const HUGE_MIN: usize = 8 << 20;

/// Huge page size (x86-64 and aarch64 Linux).
const HUGE_PAGE: usize = 2 << 20;

/// A fixed-capacity buffer of plain values, filled by [`WeightBuf::push`].
pub struct WeightBuf<T: Copy> {
    store: Store<T>,
}

enum Store<T> {
    Heap(Vec<T>),
    #[cfg(target_os = "linux")]
    Mapped {
        map: memmap2::MmapMut,
        /// Byte offset of element 0 (the first 2 MiB boundary in the mapping).
        offset: usize,
        len: usize,
        cap: usize,
    },
}

// SAFETY: the mapping is owned memory like a Vec's; T is Send/Sync as the bounds require.
unsafe impl<T: Copy + Send> Send for WeightBuf<T> {}
// SAFETY: as above; shared access is read-only.
unsafe impl<T: Copy + Sync> Sync for WeightBuf<T> {}

impl<T: Copy> WeightBuf<T> {
    /// Room for `cap` values.
    pub fn with_capacity(cap: usize) -> Self {
        let bytes = cap * std::mem::size_of::<T>();
        #[cfg(target_os = "linux")]
        if bytes >= HUGE_MIN && std::mem::align_of::<T>() <= HUGE_PAGE {
            if let Ok(map) = memmap2::MmapOptions::new()
                .len(bytes + HUGE_PAGE)
                .map_anon()
            {
                let start = map.as_ptr() as usize;
                let offset = start.next_multiple_of(HUGE_PAGE) - start;
                // advice only: without transparent huge pages the mapping still works
                let _ = map.advise(memmap2::Advice::HugePage);
                return Self {
                    store: Store::Mapped {
                        map,
                        offset,
                        len: 0,
                        cap,
                    },
                };
            }
        }
        Self {
            store: Store::Heap(Vec::with_capacity(cap)),
        }
    }

    /// Append a value; panics when full.
    pub fn push(&mut self, v: T) {
        match &mut self.store {
            Store::Heap(vec) => vec.push(v),
            #[cfg(target_os = "linux")]
            Store::Mapped {
                map,
                offset,
                len,
                cap,
            } => {
                assert!(*len < *cap, "weight buffer full");
                // SAFETY: offset + (len + 1)·size_of::<T>() ≤ offset + cap·size_of::<T>() ≤
                // the mapping's length (bytes + HUGE_PAGE, offset < HUGE_PAGE); the address is
                // aligned for T (a 2 MiB boundary plus a multiple of size_of::<T>()).
                unsafe {
                    let p = map.as_mut_ptr().add(*offset) as *mut T;
                    p.add(*len).write(v);
                }
                *len += 1;
            }
        }
    }
}

impl<T: Copy> Extend<T> for WeightBuf<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        iter.into_iter().for_each(|v| self.push(v));
    }
}

impl<T: Copy> std::ops::Deref for WeightBuf<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.store {
            Store::Heap(vec) => vec,
            #[cfg(target_os = "linux")]
            Store::Mapped {
                map, offset, len, ..
            } => {
                // SAFETY: the first `len` values were written by `push` (see there for bounds
                // and alignment); the mapping lives as long as self.
                unsafe { std::slice::from_raw_parts(map.as_ptr().add(*offset) as *const T, *len) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_huge_buffers_hold_what_was_pushed() {
        for cap in [10usize, HUGE_MIN / 4 + 3] {
            let mut b = WeightBuf::<u32>::with_capacity(cap);
            b.extend((0..cap as u32).map(|i| i.wrapping_mul(2654435761)));
            assert_eq!(b.len(), cap);
            assert!(b
                .iter()
                .enumerate()
                .all(|(i, &v)| v == (i as u32).wrapping_mul(2654435761)));
            if cap * 4 >= HUGE_MIN && cfg!(target_os = "linux") {
                assert_eq!(b.as_ptr() as usize % HUGE_PAGE, 0, "2 MiB aligned");
            }
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[should_panic(expected = "full")]
    fn pushing_past_capacity_panics() {
        let mut b = WeightBuf::<u64>::with_capacity(HUGE_MIN / 8);
        b.extend(std::iter::repeat_n(1, HUGE_MIN / 8 + 1));
    }
}
