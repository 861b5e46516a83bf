//! Rotary position tables, with the two ways a model changes its frequencies: linear scaling
//! (positions divided by a factor, Gemma 3 4B and up) and per-frequency divisors (Llama 3.1 and
//! later: GGUF's `rope_freqs.weight`, or `rope_scaling` of type `llama3` in `config.json`).

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

/// Rotary tables for positions `0..len`: `cos`/`sin` of `(len, head_dim / 2)`.
pub(super) struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rope {
    /// Frequency `i` is `theta^(-2i/head_dim) / scale / factors[i]` (`scale`: linear scaling,
    /// 1.0 = none; `factors`: per-frequency divisors, as llama.cpp applies `rope_freqs`).
    pub fn new(
        head_dim: usize,
        theta: f32,
        scale: f32,
        factors: Option<&[f32]>,
        len: usize,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        if let Some(f) = factors {
            ensure!(
                f.len() == half,
                "rope frequency factors: {} values for head_dim {head_dim} (expected {half})",
                f.len()
            );
        }
        let inv: Vec<f32> = (0..half)
            .map(|i| {
                let divisor = factors.map_or(1.0, |f| f[i]);
                1.0 / theta.powf(2.0 * i as f32 / head_dim as f32) / scale / divisor
            })
            .collect();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in 0..len {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (len, half), device)?,
            sin: Tensor::from_vec(sin, (len, half), device)?,
        })
    }
}

/// Llama 3's frequency divisors (`rope_scaling.rope_type = "llama3"`): wavelengths shorter than
/// `original_context / high_freq_factor` keep their frequency, longer than
/// `original_context / low_freq_factor` are divided by `factor`, and those between blend the two.
pub fn llama3_factors(
    head_dim: usize,
    theta: f32,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_context: f32,
) -> Vec<f32> {
    let low_wavelen = original_context / low_freq_factor;
    let high_wavelen = original_context / high_freq_factor;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf(2.0 * i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original_context / wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                // new frequency = (1 - smooth)·freq/factor + smooth·freq, as a divisor of freq
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_factors_keep_short_waves_and_stretch_long_ones() {
        // Llama 3.2's values: theta 500000, factor 32, low 1, high 4, original context 8192
        let f = llama3_factors(64, 500_000.0, 32.0, 1.0, 4.0, 8192.0);
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[31], 32.0);
        // monotone between, every value in [1, factor]
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
        assert!(f.iter().any(|&v| v > 1.0 && v < 32.0), "{f:?}");
    }

    #[test]
    fn factors_divide_the_frequencies() {
        let plain = Rope::new(4, 10_000.0, 1.0, None, 3, &Device::Cpu).unwrap();
        let halved = Rope::new(4, 10_000.0, 1.0, Some(&[2.0, 2.0]), 5, &Device::Cpu).unwrap();
        // position 2 with every frequency halved is position 1 of the plain table
        let a = plain.cos.get(1).unwrap().to_vec1::<f32>().unwrap();
        let b = halved.cos.get(2).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        assert!(Rope::new(4, 10_000.0, 1.0, Some(&[1.0]), 2, &Device::Cpu).is_err());
    }
}
