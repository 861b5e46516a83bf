//! Model definition and loading.

pub mod attention;
pub mod config;
pub mod kernels;
pub mod kv;
pub mod profile;
pub mod qmatmul;
pub mod rope;
pub mod transformer;
pub mod vecmath;
pub mod weights;

pub use config::{Architecture, ModelConfig};
pub use kernels::Kernels;
pub use kv::KvCache;
pub use transformer::{Logits, Segment, Transformer};
pub use weights::{Matrix, Requant, Weights};
