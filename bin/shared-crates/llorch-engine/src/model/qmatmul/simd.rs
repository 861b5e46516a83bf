//! AVX2 building blocks shared by the weight types' kernels. Every function needs AVX2 and FMA,
//! which callers check at run time ([`super::available`]) before entering any of them.

use std::arch::x86_64::*;

/// Sums of 4 adjacent u8 × i8 products: one VNNI instruction where the build has it.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn dot_u8_i8(u: __m256i, i: __m256i) -> __m256i {
    #[cfg(all(target_feature = "avx512vnni", target_feature = "avx512vl"))]
    // SAFETY: this branch is compiled only when the build enables AVX-512 VNNI and VL.
    #[allow(unused_unsafe)]
    unsafe {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, i)
    }
    #[cfg(not(all(target_feature = "avx512vnni", target_feature = "avx512vl")))]
    {
        // maddubs saturates at i16: the operands here stay below (u ≤ 128, |i| ≤ 127: 2·128·127)
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, i), _mm256_set1_epi16(1))
    }
}

/// Sums of 4 adjacent i8 × i8 products: |w| as the unsigned operand, the sign moved onto x.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn dot_i8_i8(w: __m256i, x: __m256i) -> __m256i {
    dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
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

/// 32 bytes from 16: low nibbles in the low half, high nibbles in the high half.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: reads the 16 bytes of `qs`.
    let q = unsafe { _mm_loadu_si128(qs.as_ptr() as *const __m128i) };
    let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
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
