//! Loading weights from GGUF files and safetensors directories into the form the forward pass
//! runs: quantized matrices (`QMatMul`) and small F32 vectors.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};

use super::profile;
use super::qmatmul::{self, OwnMatrix};
use super::Kernels;

/// What to do with weight types the engine has no fast CPU kernel for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requant {
    /// The default. On a CPU with AVX2/FMA: Q4_1, Q5_0, Q8_0, Q4_K, Q5_K and Q6_K run as stored on
    /// this engine's own kernels; Q5_1 and F16/BF16/F32 matrices are converted to Q8_0; other
    /// k-quants run as stored on candle's kernels.
    Auto,
    /// Like `Auto`, but Q4_1 and Q5_0 are converted to Q8_0 too (loses some precision on
    /// blocks far from zero).
    Q8_0,
    /// Run weights as stored, with candle's kernels.
    Off,
}

/// A weight matrix used as `y = x · Wᵀ`.
pub enum Matrix {
    /// Candle's quantized or dense matmul.
    Candle(QMatMul),
    /// One of this engine's CPU kernels.
    Own(OwnMatrix),
}

impl Matrix {
    /// Whether [`Matrix::fuse`] accepts these: engine kernels of one type and input size, or
    /// CPU candle quantized matrices of one type and input size.
    pub fn can_fuse<'a>(parts: impl Iterator<Item = &'a Matrix> + Clone) -> bool {
        let mut key = None;
        for m in parts {
            let k = match m {
                Matrix::Own(o) => (true, o.dtype(), o.k()),
                Matrix::Candle(QMatMul::QTensor(q)) if q.device().is_cpu() => (
                    false,
                    q.dtype(),
                    q.shape().dims2().map(|d| d.1).unwrap_or(0),
                ),
                _ => return false,
            };
            if *key.get_or_insert(k) != k {
                return false;
            }
        }
        true
    }

    /// Stack matrices along the output axis so one matmul (one activation quantization, one
    /// parallel region) computes all of them. Check [`Matrix::can_fuse`] first.
    pub fn fuse(parts: Vec<Matrix>) -> Result<Matrix> {
        if parts.iter().all(|m| matches!(m, Matrix::Own(_))) {
            let mats = parts
                .into_iter()
                .filter_map(|m| match m {
                    Matrix::Own(o) => Some(o),
                    Matrix::Candle(_) => None,
                })
                .collect();
            return Ok(Matrix::Own(OwnMatrix::concat(mats)?));
        }
        let mut bytes = Vec::new();
        let (mut n, mut k, mut dtype) = (0, 0, GgmlDType::F32);
        for m in &parts {
            let Matrix::Candle(QMatMul::QTensor(q)) = m else {
                anyhow::bail!("matrix cannot be fused")
            };
            bytes.extend_from_slice(&q.data()?);
            let (rows, cols) = q.shape().dims2()?;
            n += rows;
            k = cols;
            dtype = q.dtype();
        }
        let storage = candle_core::quantized::QStorage::from_data(
            std::borrow::Cow::Owned(bytes),
            &Device::Cpu,
            dtype,
        )?;
        Ok(Matrix::Candle(QMatMul::from_arc(Arc::new(QTensor::new(
            storage,
            (n, k),
        )?))?))
    }

    /// Wrap a CPU or GPU `QTensor`: on a CPU with the engine's kernels (unless `requant` is
    /// `Off`) the types they cover run on them, everything else on candle's.
    pub fn from_qtensor(q: QTensor, requant: Requant) -> Result<Matrix> {
        let own = q.device().is_cpu() && requant != Requant::Off && qmatmul::available();
        if own {
            if let Some(m) = OwnMatrix::from_qtensor(&q)? {
                return Ok(Matrix::Own(m));
            }
        }
        Ok(Matrix::Candle(QMatMul::from_arc(Arc::new(q))?))
    }

    /// Embedding lookup of rows `ids` (`ids_t` is the same ids as a tensor on the device),
    /// for a tied embedding/output table.
    pub fn embedding(&self, ids: &[u32], ids_t: &Tensor) -> Result<Tensor> {
        match self {
            Matrix::Own(m) => m.rows(ids),
            Matrix::Candle(m) => Ok(m.embedding(ids_t)?),
        }
    }

    /// Bytes the matrix holds in memory (on its device), as stored at run time.
    pub fn allocated_bytes(&self) -> usize {
        match self {
            Matrix::Own(m) => m.allocated_bytes(),
            Matrix::Candle(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Matrix::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => tensor_bytes(t),
        }
    }

    /// `x` `(…, k)` → `(…, n)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let t = profile::start();
        let y = match self {
            Matrix::Candle(m) => candle_core::Module::forward(m, x)?,
            Matrix::Own(m) => m.forward(x)?,
        };
        profile::record(t, || {
            let (kind, dtype) = match self {
                Matrix::Own(m) => ("own", format!("{:?}", m.dtype())),
                Matrix::Candle(QMatMul::QTensor(q)) => ("candle", format!("{:?}", q.dtype())),
                Matrix::Candle(_) => ("candle", "dense".into()),
            };
            let (k, n) = (x.dims().last().copied(), y.dims().last().copied());
            format!(
                "matmul {dtype} ({kind}) {}→{}",
                k.unwrap_or(0),
                n.unwrap_or(0)
            )
        });
        Ok(y)
    }
}

/// Weight types this build can run; anything else fails at load with a clear error.
fn supported(dtype: GgmlDType) -> bool {
    use GgmlDType as G;
    matches!(
        dtype,
        G::F32
            | G::F16
            | G::BF16
            | G::Q4_0
            | G::Q4_1
            | G::Q5_0
            | G::Q5_1
            | G::Q8_0
            | G::Q2K
            | G::Q3K
            | G::Q4K
            | G::Q5K
            | G::Q6K
    )
}

/// A source of named tensors.
pub enum WeightSource {
    /// A GGUF file: metadata already parsed, tensors read on demand.
    Gguf {
        path: PathBuf,
        content: gguf_file::Content,
        file: File,
    },
    /// A directory of `*.safetensors` shards.
    Safetensors { tensors: HashMap<String, Tensor> },
}

/// Loaded weights plus the load policy; hands out matrices and vectors by name.
pub struct Weights {
    source: WeightSource,
    device: Device,
    requant: Requant,
    /// Whether the engine's own CPU path runs (else the device-generic one).
    native: bool,
    /// Weight type as stored (most common matrix type) and as run.
    pub stored_type: String,
    pub runtime_type: String,
}

impl Weights {
    /// Weights from an opened GGUF file (its header read by `llorch_catalog::gguf::read`).
    pub fn gguf(
        path: &Path,
        header: llorch_catalog::gguf::GgufHeader,
        file: File,
        device: &Device,
        requant: Requant,
        kernels: Kernels,
    ) -> Result<Self> {
        let requant = generic_policy(requant, kernels);
        for (name, info) in header.content.tensor_infos.iter() {
            if !supported(info.ggml_dtype) {
                bail!(
                    "{}: tensor `{name}` has quantization type {:?}, which this build cannot run \
                     (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)",
                    path.display(),
                    info.ggml_dtype
                );
            }
        }
        let stored = header.dominant_matrix_type();
        let content = header.content;
        let mut w = Self {
            source: WeightSource::Gguf {
                path: path.to_path_buf(),
                content,
                file,
            },
            device: device.clone(),
            requant,
            native: kernels.native_on(device),
            stored_type: format!("{stored:?}"),
            runtime_type: String::new(),
        };
        w.runtime_type = format!("{:?}", w.runtime_dtype(stored));
        Ok(w)
    }

    /// Weights from a directory of safetensors shards (memory-mapped).
    pub fn safetensors(
        dir: &Path,
        device: &Device,
        requant: Requant,
        kernels: Kernels,
    ) -> Result<Self> {
        let requant = generic_policy(requant, kernels);
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot list directory", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{}: no *.safetensors files", dir.display());
        }
        let mut tensors = HashMap::new();
        let mut stored = DType::F32;
        for f in &files {
            let map = candle_core::safetensors::load(f, &Device::Cpu)
                .with_context(|| format!("{}: not a readable safetensors file", f.display()))?;
            for (k, t) in map {
                if t.rank() == 2 {
                    stored = t.dtype();
                }
                tensors.insert(k, t);
            }
        }
        let mut w = Self {
            source: WeightSource::Safetensors { tensors },
            device: device.clone(),
            requant,
            native: kernels.native_on(device),
            stored_type: format!("{stored:?}").to_uppercase(),
            runtime_type: String::new(),
        };
        w.runtime_type = if device.is_cpu() && requant != Requant::Off {
            "Q8_0".into()
        } else {
            w.stored_type.clone()
        };
        Ok(w)
    }

    fn runtime_dtype(&self, stored: GgmlDType) -> GgmlDType {
        if self.device.is_cpu() {
            runtime_dtype(self.requant, stored)
        } else {
            stored
        }
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            WeightSource::Gguf { content, .. } => content.tensor_infos.contains_key(name),
            WeightSource::Safetensors { tensors } => tensors.contains_key(name),
        }
    }

    /// Read a tensor as stored (quantized for GGUF) on the CPU.
    fn read_q(&mut self, name: &str) -> Result<QTensor> {
        match &mut self.source {
            WeightSource::Gguf {
                path,
                content,
                file,
            } => content.tensor(file, name, &Device::Cpu).with_context(|| {
                format!(
                    "{}: cannot read tensor `{name}` (truncated or corrupt file?)",
                    path.display()
                )
            }),
            WeightSource::Safetensors { tensors } => {
                let t = tensors
                    .get(name)
                    .with_context(|| format!("missing tensor `{name}`"))?;
                QTensor::quantize(&t.to_dtype(DType::F32)?, GgmlDType::F32).map_err(Into::into)
            }
        }
    }

    /// A GGUF matrix that runs as stored on one of the engine's kernels, streamed from the file
    /// into the kernel's layout (peak memory: the matrix once, not twice). `None` when that path
    /// does not apply (other types, a type the policy converts, a GPU, `--weights stored`,
    /// safetensors).
    pub fn own_matrix(&mut self, name: &str) -> Result<Option<Matrix>> {
        use std::io::{Seek, SeekFrom};
        let own = self.device.is_cpu() && self.requant != Requant::Off && qmatmul::available();
        let WeightSource::Gguf {
            path,
            content,
            file,
        } = &mut self.source
        else {
            return Ok(None);
        };
        let Some(info) = content.tensor_infos.get(name) else {
            return Ok(None);
        };
        let dt = info.ggml_dtype;
        let kernel = OwnMatrix::supports(dt) && runtime_dtype(self.requant, dt) == dt;
        if !own || !kernel || info.shape.rank() != 2 {
            return Ok(None);
        }
        let (n, k) = info.shape.dims2()?;
        let at = content.tensor_data_offset + info.offset;
        let read = |file: &mut File| -> Result<Matrix> {
            file.seek(SeekFrom::Start(at))?;
            let mut r = std::io::BufReader::with_capacity(1 << 20, file);
            Ok(Matrix::Own(OwnMatrix::from_reader(&mut r, dt, n, k)?))
        };
        read(file)
            .map(Some)
            .with_context(|| format!("{}: cannot read tensor `{name}`", path.display()))
    }

    /// A weight matrix ready for `x @ Wᵀ`, converted per the requant policy.
    pub fn matrix(&mut self, name: &str) -> Result<Matrix> {
        if let WeightSource::Safetensors { tensors } = &self.source {
            let t = tensors
                .get(name)
                .with_context(|| format!("missing tensor `{name}`"))?;
            let cols = t.dim(1)?;
            if self.device.is_cpu() && self.requant != Requant::Off && cols % 32 == 0 {
                let q = QTensor::quantize(&t.to_dtype(DType::F32)?, GgmlDType::Q8_0)?;
                return Matrix::from_qtensor(q, self.requant);
            }
            return Ok(Matrix::Candle(QMatMul::Tensor(
                t.to_dtype(DType::F32)?.to_device(&self.device)?,
            )));
        }
        let stored = match &self.source {
            WeightSource::Gguf { content, .. } => {
                content.tensor_infos.get(name).map(|i| i.ggml_dtype)
            }
            WeightSource::Safetensors { .. } => None,
        };
        if stored.is_some_and(|d| self.runtime_dtype(d) == d) {
            if let Some(m) = self.own_matrix(name)? {
                return Ok(m);
            }
        }
        let q = self.read_q(name)?;
        let target = self.runtime_dtype(q.dtype());
        let q = if target != q.dtype() && q.shape().dims().last().is_some_and(|c| c % 32 == 0) {
            let f = q.dequantize(&Device::Cpu)?;
            QTensor::quantize(&f, target)?
        } else {
            q
        };
        let q = if self.device.is_cpu() {
            q
        } else {
            move_qtensor(q, &self.device)?
        };
        Matrix::from_qtensor(q, self.requant)
    }

    /// The load policy.
    pub fn requant(&self) -> Requant {
        self.requant
    }

    /// A small tensor (norm weights, biases) as F32 on the device.
    pub fn vector(&mut self, name: &str) -> Result<Tensor> {
        let t = match &self.source {
            WeightSource::Safetensors { tensors } => tensors
                .get(name)
                .with_context(|| format!("missing tensor `{name}`"))?
                .clone(),
            WeightSource::Gguf { .. } => self.read_q(name)?.dequantize(&Device::Cpu)?,
        };
        Ok(t.to_dtype(DType::F32)?.to_device(&self.device)?)
    }

    /// The token-embedding table, kept quantized (rows are dequantized on lookup).
    pub fn embedding(&mut self, name: &str) -> Result<Arc<QTensor>> {
        let q = match &self.source {
            WeightSource::Safetensors { tensors } => {
                let t = tensors
                    .get(name)
                    .with_context(|| format!("missing tensor `{name}`"))?
                    .to_dtype(DType::F32)?;
                let dt = if self.device.is_cpu()
                    && self.requant != Requant::Off
                    && t.dim(1)? % 32 == 0
                {
                    GgmlDType::Q8_0
                } else {
                    GgmlDType::F32
                };
                QTensor::quantize(&t, dt)?
            }
            WeightSource::Gguf { .. } => self.read_q(name)?,
        };
        let q = if self.device.is_cpu() {
            q
        } else {
            move_qtensor(q, &self.device)?
        };
        Ok(Arc::new(q))
    }

    /// The compute device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the engine's own CPU path runs these weights (fused projections, its kernels);
    /// false on a GPU and on the CPU with [`Kernels::Generic`].
    pub fn native(&self) -> bool {
        self.native
    }
}

/// The device-generic path runs every matrix as stored, on candle's kernels.
fn generic_policy(requant: Requant, kernels: Kernels) -> Requant {
    match kernels {
        Kernels::Native => requant,
        Kernels::Generic => Requant::Off,
    }
}

/// The type a matrix stored as `stored` runs as on the CPU under policy `requant`: the one
/// decision shared with the memory estimate (`llorch_catalog::runtime::WeightPath`).
fn runtime_dtype(requant: Requant, stored: GgmlDType) -> GgmlDType {
    use llorch_catalog::runtime::{WeightPath, WeightPolicy};
    let policy = match requant {
        Requant::Auto => WeightPolicy::Auto,
        Requant::Q8_0 => WeightPolicy::Q8_0,
        Requant::Off => WeightPolicy::Stored,
    };
    WeightPath {
        native_cpu: true,
        policy,
        own_kernels: qmatmul::available(),
    }
    .runtime_type(stored)
}

/// Bytes of a tensor's elements.
pub fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// Copy a CPU QTensor to a GPU device.
fn move_qtensor(q: QTensor, device: &Device) -> Result<QTensor> {
    let dtype = q.dtype();
    let shape = q.shape().clone();
    let data = q.data()?;
    let storage = candle_core::quantized::QStorage::from_data(data, device, dtype)?;
    Ok(QTensor::new(storage, shape)?)
}
