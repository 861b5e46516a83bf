//! Model file inspection for `models import`: GGUF header/metadata (via candle's reader) and
//! safetensors directories (shard headers, `config.json`, `tokenizer.json`), plus hashing.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use llorch_catalog::ModelFormat;
use sha2::{Digest, Sha256};

use crate::download::hex;
use crate::error::{PoolError, Result};

/// Largest safetensors JSON header accepted (the format's own limit is 100 MB).
const MAX_SAFETENSORS_HEADER: u64 = 100 * 1024 * 1024;

/// What an import learned about a model.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub format: ModelFormat,
    /// `general.architecture` (GGUF) or `model_type` (config.json).
    pub architecture: String,
    /// `general.name`, or the directory name.
    pub name: Option<String>,
    /// Trained context length, when the metadata has it.
    pub context_length: Option<u64>,
    /// Dominant weight type, e.g. `Q4_1`, `BF16`.
    pub quantization: Option<String>,
    /// What the worker's `--model` gets.
    pub model_path: PathBuf,
    /// Every file that belongs to the model, with its size.
    pub files: Vec<(String, PathBuf, u64)>,
}

/// Inspect a `.gguf` file or a safetensors directory; errors say what is wrong with it.
pub fn inspect(path: &Path) -> Result<Inspected> {
    let path = path
        .canonicalize()
        .map_err(|e| PoolError::io("open", path, e))?;
    if path.is_dir() {
        return inspect_safetensors_dir(&path);
    }
    let mut magic = [0u8; 4];
    let mut f = File::open(&path).map_err(|e| PoolError::io("open", &path, e))?;
    let n = f
        .read(&mut magic)
        .map_err(|e| PoolError::io("read", &path, e))?;
    if n == 4 && &magic == b"GGUF" {
        return inspect_gguf(&path);
    }
    let reason = if path.extension().is_some_and(|e| e == "safetensors") {
        "a single .safetensors file cannot be served: import the directory holding it with config.json and tokenizer.json".to_string()
    } else {
        format!(
            "not a GGUF file (magic {:?}) nor a safetensors directory",
            String::from_utf8_lossy(&magic[..n])
        )
    };
    Err(PoolError::InvalidModel { path, reason })
}

fn invalid(path: &Path, reason: impl Into<String>) -> PoolError {
    PoolError::InvalidModel {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn inspect_gguf(path: &Path) -> Result<Inspected> {
    let (h, _) = llorch_catalog::gguf::read(path).map_err(|e| match e {
        llorch_catalog::gguf::GgufError::Open(e) => PoolError::io("open", path, e),
        e => invalid(path, e.to_string()),
    })?;
    let architecture = h
        .architecture()
        .ok_or_else(|| invalid(path, "GGUF metadata lacks general.architecture"))?
        .to_string();
    if h.content.tensor_infos.is_empty() {
        return Err(invalid(path, "GGUF file has no tensors"));
    }
    // Every tensor must lie inside the file: catches truncated downloads and copies.
    if let Some(t) = h.truncated() {
        return Err(invalid(
            path,
            format!(
                "tensor `{}` ends at byte {} but the file has {} bytes (truncated?)",
                t.tensor, t.ends_at, t.file_size
            ),
        ));
    }
    let file_size = h.file_size;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Inspected {
        format: ModelFormat::Gguf,
        architecture,
        name: h.meta_str("general.name").map(str::to_string),
        context_length: h.arch_u64("context_length"),
        quantization: Some(format!("{:?}", h.dominant_matrix_type()).to_uppercase()),
        model_path: path.to_path_buf(),
        files: vec![(file_name, path.to_path_buf(), file_size)],
    })
}

fn inspect_safetensors_dir(dir: &Path) -> Result<Inspected> {
    let mut shards = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| PoolError::io("read directory", dir, e))?;
    for entry in entries {
        let p = entry
            .map_err(|e| PoolError::io("read directory", dir, e))?
            .path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            shards.push(p);
        }
    }
    shards.sort();
    if shards.is_empty() {
        return Err(invalid(dir, "no *.safetensors files in the directory"));
    }
    let mut dtype_bytes: HashMap<String, u64> = HashMap::new();
    for shard in &shards {
        for (dtype, bytes) in safetensors_header(shard)? {
            *dtype_bytes.entry(dtype).or_default() += bytes;
        }
    }
    let config_path = dir.join("config.json");
    let config: serde_json::Value = std::fs::read_to_string(&config_path)
        .map_err(|e| invalid(dir, format!("config.json: {e}")))
        .and_then(|t| {
            serde_json::from_str(&t).map_err(|e| invalid(dir, format!("config.json: {e}")))
        })?;
    if !dir.join("tokenizer.json").is_file() {
        return Err(invalid(dir, "tokenizer.json is missing"));
    }
    let architecture = config["model_type"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            config["architectures"][0]
                .as_str()
                .map(|a| a.to_lowercase().replace("forcausallm", ""))
        })
        .ok_or_else(|| invalid(dir, "config.json has neither model_type nor architectures"))?;
    let mut files = Vec::new();
    let mut names: Vec<PathBuf> = shards.clone();
    for extra in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model.safetensors.index.json",
    ] {
        if dir.join(extra).is_file() {
            names.push(dir.join(extra));
        }
    }
    for p in names {
        let size = p
            .metadata()
            .map_err(|e| PoolError::io("stat", &p, e))?
            .len();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push((name, p, size));
    }
    Ok(Inspected {
        format: ModelFormat::Safetensors,
        architecture,
        name: dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        context_length: config["max_position_embeddings"].as_u64(),
        quantization: dtype_bytes
            .into_iter()
            .max_by_key(|(_, b)| *b)
            .map(|(t, _)| t),
        model_path: dir.to_path_buf(),
        files,
    })
}

/// Parse one shard's header; returns (dtype, bytes) per tensor after checking offsets fit.
fn safetensors_header(path: &Path) -> Result<Vec<(String, u64)>> {
    let mut f = File::open(path).map_err(|e| PoolError::io("open", path, e))?;
    let size = f
        .metadata()
        .map_err(|e| PoolError::io("stat", path, e))?
        .len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| invalid(path, "file shorter than a safetensors header"))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_SAFETENSORS_HEADER || 8 + len > size {
        return Err(invalid(
            path,
            format!("safetensors header length {len} does not fit the file ({size} bytes)"),
        ));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| PoolError::io("read", path, e))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| invalid(path, format!("bad safetensors header: {e}")))?;
    let data_len = size - 8 - len;
    let mut out = Vec::new();
    for (name, t) in header.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let offs = t["data_offsets"]
            .as_array()
            .and_then(|a| Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?)));
        let (start, end) =
            offs.ok_or_else(|| invalid(path, format!("tensor `{name}` has no data_offsets")))?;
        if start > end || end > data_len {
            return Err(invalid(
                path,
                format!("tensor `{name}` lies outside the file (truncated?)"),
            ));
        }
        out.push((t["dtype"].as_str().unwrap_or("?").to_string(), end - start));
    }
    Ok(out)
}

/// sha256 (hex) of a file's content.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| PoolError::io("open", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| PoolError::io("read", path, e))?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}
