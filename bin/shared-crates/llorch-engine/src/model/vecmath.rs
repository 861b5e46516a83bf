//! Elementwise math for the native CPU path, written with plain arithmetic so that loops over
//! rows vectorize (libm's `expf`/`tanhf` are a call per element): `e^x`, and the gated MLP
//! activations `act(gate) · up` in one pass, parallel over rows.
//!
//! Every function is elementwise, so a row's result never depends on the other rows.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::attention::with_slice;

/// `e^x` within 2 ulp for `x` in `[-87, 88]`; arguments outside are clamped to it.
///
/// Range reduction `x = n ln2 + r`, `|r| <= ln2/2`, a degree-6 polynomial for `e^r` (the classic
/// Cephes minimax coefficients), scaled by `2^n` through the exponent bits.
#[inline]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(LOG2E, ROUND);
    let n = t - ROUND;
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    let mut p = 1.987_569_2e-4f32;
    p = p.mul_add(r, 1.398_2e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    // n is an integer in [-126, 127]: 2^n from its biased exponent
    let bits = (t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32;
    y * f32::from_bits(bits << 23)
}

/// The MLP's gate activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x · σ(x)` (Llama, Qwen2, Phi-3, Mistral).
    Silu,
    /// GELU, tanh approximation (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    /// The activation of one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Silu => x / (1.0 + exp(-x)),
            // 0.5·x·(1 + tanh(y)) = x·σ(2y): no cancellation where tanh(y) is near -1
            Activation::GeluTanh => {
                const C: f32 = 0.797_884_6; // sqrt(2/pi)
                let y = C * x.mul_add(0.044_715 * x * x, x);
                x / (1.0 + exp(-2.0 * y))
            }
        }
    }
}

/// Below this many elements the activation runs on one thread.
const PARALLEL_ELEMS: usize = 1 << 15;

/// `act(gate) · up` for `(rows, ff)` F32 CPU tensors whose rows are contiguous (narrowed views
/// of a fused gate-up output allowed). Returns `(rows, ff)`.
pub fn gated(gate: &Tensor, up: &Tensor, act: Activation) -> Result<Tensor> {
    let (rows, ff) = gate.dims2()?;
    ensure!(
        up.dims2()? == (rows, ff),
        "gated activation: gate {:?}, up {:?}",
        gate.dims(),
        up.dims()
    );
    let mut out = vec![0f32; rows * ff];
    with_slice::<f32, _>(gate, |gs, g0, gst| {
        with_slice::<f32, _>(up, |us, u0, ust| {
            ensure!(
                gst[1] == 1 && ust[1] == 1,
                "gated activation: rows must be contiguous"
            );
            let row = |(r, o): (usize, &mut [f32])| {
                let g = &gs[g0 + r * gst[0]..][..ff];
                let u = &us[u0 + r * ust[0]..][..ff];
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    *o = act.apply(g) * u;
                }
            };
            if rows * ff >= PARALLEL_ELEMS {
                out.par_chunks_mut(ff).enumerate().for_each(row);
            } else {
                out.chunks_mut(ff).enumerate().for_each(row);
            }
            Ok(())
        })
    })?;
    Ok(Tensor::from_vec(out, (rows, ff), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_over_its_range() {
        let mut worst = 0f64;
        for i in 0..=400_000u32 {
            let x = -87.0 + (i as f32) * 175.0 / 400_000.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn activations_match_their_definitions() {
        for i in 0..=20_000 {
            let x = -20.0 + i as f64 * 40.0 / 20_000.0;
            let silu = x / (1.0 + (-x).exp());
            let y = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            let gelu = 0.5 * x * (1.0 + y.tanh());
            for (act, want) in [(Activation::Silu, silu), (Activation::GeluTanh, gelu)] {
                let got = act.apply(x as f32) as f64;
                // f32 rounding of the argument costs about |2y|·6e-8 relative through e^-2y
                let tol = 5e-6 * want.abs().max(1e-3);
                assert!(
                    (got - want).abs() <= tol,
                    "{act:?}({x}) = {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn gated_reads_views_of_a_fused_gate_up() {
        let (rows, ff) = (3, 40_000); // large enough to run in parallel
        let gu: Vec<f32> = (0..rows * 2 * ff)
            .map(|i| ((i % 97) as f32 - 48.0) / 10.0)
            .collect();
        let gu = Tensor::from_vec(gu, (rows, 2 * ff), &Device::Cpu).unwrap();
        let (g, u) = (gu.narrow(1, 0, ff).unwrap(), gu.narrow(1, ff, ff).unwrap());
        let got: Vec<Vec<f32>> = gated(&g, &u, Activation::Silu).unwrap().to_vec2().unwrap();
        let (g, u): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (g.to_vec2().unwrap(), u.to_vec2().unwrap());
        for r in 0..rows {
            for c in [0, 1, ff / 2, ff - 1] {
                assert_eq!(got[r][c], Activation::Silu.apply(g[r][c]) * u[r][c]);
            }
        }
    }
}
