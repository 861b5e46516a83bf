//! The one GGUF header reader: llorch-pool's import and memory estimate and llorch-engine's
//! loader all open model files through [`read`], so the header is parsed, its metadata read and
//! a truncated file detected the same way everywhere.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;

/// Why a GGUF file could not be read.
#[derive(Debug)]
pub enum GgufError {
    /// The file could not be opened or sized.
    Open(std::io::Error),
    /// The header is not valid GGUF (or holds a type this build does not know); the message
    /// without candle's backtrace.
    Header(String),
}

impl std::fmt::Display for GgufError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GgufError::Open(e) => write!(f, "cannot open: {e}"),
            GgufError::Header(m) => write!(f, "bad GGUF header: {m}"),
        }
    }
}

impl std::error::Error for GgufError {}

/// A parsed header (metadata and tensor directory) and the size of its file.
pub struct GgufHeader {
    pub content: Content,
    pub file_size: u64,
}

/// A tensor that ends past the end of its file (a truncated download or copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    pub tensor: String,
    pub ends_at: u64,
    pub file_size: u64,
}

/// Read the header of the GGUF file at `path`; the open file comes back for reading tensors.
pub fn read(path: &Path) -> Result<(GgufHeader, File), GgufError> {
    let file = File::open(path).map_err(GgufError::Open)?;
    let file_size = file.metadata().map_err(GgufError::Open)?.len();
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| {
        // candle appends a backtrace under RUST_BACKTRACE: keep the first line only
        let msg = e.to_string();
        GgufError::Header(msg.lines().next().unwrap_or_default().trim().to_string())
    })?;
    Ok((GgufHeader { content, file_size }, reader.into_inner()))
}

fn as_u64(v: &Value) -> Option<u64> {
    v.to_u64()
        .ok()
        .or_else(|| v.to_u32().ok().map(u64::from))
        .or_else(|| v.to_i32().ok().and_then(|n| u64::try_from(n).ok()))
        .or_else(|| v.to_i64().ok().and_then(|n| u64::try_from(n).ok()))
}

impl GgufHeader {
    /// A string metadata value.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
    }

    /// An unsigned metadata value, whichever integer type the writer chose.
    pub fn meta_u64(&self, key: &str) -> Option<u64> {
        self.content.metadata.get(key).and_then(as_u64)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.meta_str("general.architecture")
    }

    /// `{architecture}.{key}` as an unsigned number (e.g. `block_count`).
    pub fn arch_u64(&self, key: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.meta_u64(&format!("{arch}.{key}"))
    }

    /// The first tensor (in name order) whose data ends past the end of the file.
    pub fn truncated(&self) -> Option<Truncated> {
        let mut infos: Vec<_> = self.content.tensor_infos.iter().collect();
        infos.sort_by(|a, b| a.0.cmp(b.0));
        infos.into_iter().find_map(|(name, info)| {
            let dt = info.ggml_dtype;
            let bytes = info.shape.elem_count() as u64 / dt.block_size().max(1) as u64
                * dt.type_size() as u64;
            let end = self
                .content
                .tensor_data_offset
                .saturating_add(info.offset)
                .saturating_add(bytes);
            (end > self.file_size).then(|| Truncated {
                tensor: name.clone(),
                ends_at: end,
                file_size: self.file_size,
            })
        })
    }

    /// The model's weight type as reported (`quantization`): the most common type among its
    /// matrices (ties to the larger total size), F32 when it has none.
    pub fn dominant_matrix_type(&self) -> GgmlDType {
        let mut by_type: Vec<(GgmlDType, usize, u64)> = Vec::new();
        for info in self.content.tensor_infos.values() {
            if info.shape.rank() != 2 {
                continue;
            }
            let elems = info.shape.elem_count() as u64;
            match by_type.iter_mut().find(|(t, _, _)| *t == info.ggml_dtype) {
                Some((_, n, e)) => {
                    *n += 1;
                    *e += elems;
                }
                None => by_type.push((info.ggml_dtype, 1, elems)),
            }
        }
        by_type
            .into_iter()
            .max_by_key(|(_, n, e)| (*n, *e))
            .map_or(GgmlDType::F32, |(t, _, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_gguf_is_a_header_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gguf");
        std::fs::write(&p, b"not a gguf file at all").unwrap();
        let err = read(&p).err().expect("refused");
        assert!(matches!(err, GgufError::Header(_)), "{err}");
        assert!(err.to_string().starts_with("bad GGUF header: "), "{err}");
        let missing = read(&dir.path().join("absent.gguf"))
            .err()
            .expect("refused");
        assert!(matches!(missing, GgufError::Open(_)), "{missing}");
    }

    #[test]
    fn the_test_model_reads_and_is_not_truncated() {
        let Some(path) = llorch_testkit::require_model(
            "gguf::the_test_model_reads_and_is_not_truncated",
            llorch_testkit::SMOLLM2_FILE,
        ) else {
            return;
        };
        let (h, _file) = read(&path).expect("reads");
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.arch_u64("block_count"), Some(30));
        assert_eq!(h.dominant_matrix_type(), GgmlDType::Q4_1);
        assert_eq!(h.truncated(), None);
        // the same header over a file cut in half: the first tensor past the end is named
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.gguf");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let (h, _) = read(&cut).expect("the header is intact");
        let t = h.truncated().expect("truncated");
        assert_eq!(t.file_size, (bytes.len() / 2) as u64);
        assert!(t.ends_at > t.file_size);
    }
}
