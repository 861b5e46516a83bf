//! Which code path runs the model: this engine's CPU kernels, or the device-generic path that
//! CUDA and Metal take, selectable on the CPU so that CI exercises the GPU code without a GPU.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// The compute path of a loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The default. On the CPU: this engine's quantized matmuls (weights as stored or converted
    /// per the `Requant` policy), fused projections, its attention kernel and an F16 KV cache.
    /// On a GPU device this means the generic path (there is nothing else there).
    #[default]
    Native,
    /// The device-generic path, on any device: candle's quantized matmuls on the stored weight
    /// types, unfused projections, candle's masked softmax attention and an F32 KV cache —
    /// exactly the code CUDA and Metal run. On the CPU it is a test and debugging aid (slower).
    Generic,
}

impl Kernels {
    /// Whether the engine's own CPU path runs on `device`.
    pub fn native_on(self, device: &Device) -> bool {
        device.is_cpu() && self == Kernels::Native
    }

    /// `native` or `generic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kernels::Native => "native",
            Kernels::Generic => "generic",
        }
    }
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kernels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Kernels::Native),
            "generic" => Ok(Kernels::Generic),
            other => Err(format!(
                "unknown kernels `{other}` (expected `native` or `generic`)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_path_exists_only_on_the_cpu() {
        assert!(Kernels::Native.native_on(&Device::Cpu));
        assert!(!Kernels::Generic.native_on(&Device::Cpu));
        assert_eq!("generic".parse::<Kernels>(), Ok(Kernels::Generic));
        assert_eq!("native".parse::<Kernels>(), Ok(Kernels::Native));
        assert!("gpu".parse::<Kernels>().unwrap_err().contains("`gpu`"));
    }
}
