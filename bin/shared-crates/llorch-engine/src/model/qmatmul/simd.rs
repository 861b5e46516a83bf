//! AVX2 building blocks shared by the weight types' kernels. Every function needs AVX2, FMA and
//! F16C, which callers check at run time ([`super::available`]) before entering any of them.

use std::arch::x86_64::*;

/// `acc` plus the sums of 4 adjacent u8 × i8 products (the u8 operand below 128 without VNNI,
/// where maddubs saturates at i16).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn dot_acc(acc: __m256i, u: __m256i, i: __m256i) -> __m256i {
    #[cfg(all(target_feature = "avx512vnni", target_feature = "avx512vl"))]
    // SAFETY: this branch is compiled only when the build enables AVX-512 VNNI and VL.
    #[allow(unused_unsafe)]
    unsafe {
        _mm256_dpbusd_epi32(acc, u, i)
    }
    #[cfg(not(all(target_feature = "avx512vnni", target_feature = "avx512vl")))]
    {
        let pairs = _mm256_maddubs_epi16(u, i);
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
}

/// Activation values `off..off + 4` of a block broadcast to the eight 32-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn quad(qs: &[i8], off: usize) -> __m256i {
    let b: [i8; 4] = qs[off..off + 4].try_into().expect("4 values");
    _mm256_set1_epi32(i32::from_le_bytes(b.map(|v| v as u8)))
}

/// Ask for the cache line `ahead` bytes past `p`: decode streams each matrix from memory once,
/// and the hardware prefetcher stops at every 4 KiB page (a miss per page without this).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn prefetch_ahead<T>(p: &T) {
    let ahead = (p as *const T as *const i8).wrapping_add(PREFETCH_BYTES);
    // a prefetch never faults, whatever the address
    _mm_prefetch::<_MM_HINT_T0>(ahead)
}

/// How far ahead of the weights being multiplied [`prefetch_ahead`] asks.
pub(super) const PREFETCH_BYTES: usize = 1536;

/// Eight f32 lanes as an array.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn lanes(v: __m256) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: `out` has room for 8 f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Eight f16 (as bits) widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_ph(v: &[u16; 8]) -> __m256 {
    // SAFETY: reads the 8 u16 of `v`.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(v.as_ptr() as *const __m128i) })
}

/// Horizontal sum of 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 32 bytes of `i8` at `p`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn load(p: &[i8]) -> __m256i {
    assert!(p.len() >= 32);
    // SAFETY: at least 32 bytes are readable (checked above; the check folds away inlined).
    unsafe { _mm256_loadu_si256(p.as_ptr() as *const __m256i) }
}

/// 32 bytes of `u8` at `p`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn load_u8(p: &[u8]) -> __m256i {
    assert!(p.len() >= 32);
    // SAFETY: as in `load`.
    unsafe { _mm256_loadu_si256(p.as_ptr() as *const __m256i) }
}
