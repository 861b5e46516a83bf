//! Getting a model onto this host: `models download` (hub → Hugging Face cache) and
//! `models import` (a local file or directory, validated by reading its metadata).

use std::path::Path;

use llorch_catalog::{
    Catalog, CatalogError, LocalFile, LocalModel, ModelFormat, ModelSource, ModelSpec, ModelView,
};

use crate::download::{fetch_file, write_ref, DownloadOptions, Fetched};
use crate::error::{PoolError, Result};
use crate::hub::{glob_match, is_pattern, Hub, HubConfig};
use crate::inspect::{inspect, sha256_file};
use crate::models::view;
use crate::progress::ProgressFile;
use crate::Ctx;

fn lookup(cat: &Catalog, id: &str) -> Result<ModelView> {
    let (spec, builtin) = cat
        .get(id)
        .ok_or_else(|| CatalogError::NotFound(id.to_string()))?;
    Ok(view(cat, spec, builtin))
}

/// Download a catalog entry (every file it names) and record it as local.
pub fn download(ctx: &Ctx, id: &str, opts: &DownloadOptions) -> Result<ModelView> {
    let cat = ctx.store.load()?;
    let v = lookup(&cat, id)?;
    if v.downloaded
        && v.local
            .as_ref()
            .is_some_and(|l| l.files.iter().all(|f| f.path.exists()))
    {
        ctx.info(&format!(
            "{id} is already on this host (run `models verify {id}` to re-check it)"
        ));
        return Ok(v);
    }
    let spec = v.spec;
    let repo = spec
        .repo
        .clone()
        .ok_or_else(|| PoolError::NoRepo { id: id.into() })?;
    let hub = Hub::new(HubConfig::from_env())?;
    let (files, revision) = resolve_files(&hub, &spec, &repo)?;
    let pin = if files.len() == 1 {
        spec.sha256.as_deref()
    } else {
        None
    };
    // Sizes first, so the progress file has the total from the start.
    let mut total = 0;
    for f in &files {
        total += hub.file_meta(&repo, &revision, f)?.size;
    }
    let mut opts = opts.clone();
    opts.progress_file = Some(std::rc::Rc::new(ProgressFile::create(
        ctx.home.download_progress(id),
        id,
        total,
    )));
    let mut fetched: Vec<Fetched> = Vec::new();
    for f in &files {
        ctx.info(&format!("fetching {repo}/{f}"));
        fetched.push(fetch_file(&hub, &repo, &revision, f, pin, &opts)?);
    }
    let commit = fetched[0].commit.clone();
    // Files fetched by commit (listing mode) still get the branch recorded, as Python does.
    write_ref(&hub.config.repo_dir(&repo), &spec.revision, &commit)?;
    let path = match spec.format {
        ModelFormat::Gguf => fetched
            .iter()
            .find(|f| f.name.ends_with(".gguf"))
            .unwrap_or(&fetched[0])
            .path
            .clone(),
        ModelFormat::Safetensors => hub.config.repo_dir(&repo).join("snapshots").join(&commit),
    };
    let ins = inspect(&path)?;
    let local = LocalModel {
        source: ModelSource::Download,
        path,
        size_bytes: fetched.iter().map(|f| f.size).sum(),
        files: fetched
            .into_iter()
            .map(|f| LocalFile {
                name: f.name,
                path: f.path,
                size_bytes: f.size,
                sha256: f.sha256,
            })
            .collect(),
        commit: Some(commit),
        added_at: llorch_catalog::unix_now(),
        context_length: ins.context_length,
        quantization: ins.quantization,
    };
    ctx.store.update(|c| {
        c.get(id).ok_or_else(|| CatalogError::NotFound(id.into()))?;
        c.local.insert(id.to_string(), local.clone());
        Ok::<_, PoolError>(())
    })?;
    let cat = ctx.store.load()?;
    lookup(&cat, id)
}

/// Exact file names to fetch, listing the repo when the entry uses glob patterns.
fn resolve_files(hub: &Hub, spec: &ModelSpec, repo: &str) -> Result<(Vec<String>, String)> {
    if !spec.files.iter().any(|f| is_pattern(f)) {
        return Ok((spec.files.clone(), spec.revision.clone()));
    }
    let (commit, names) = hub.list_files(repo, &spec.revision)?;
    let chosen: Vec<String> = names
        .into_iter()
        .filter(|n| spec.files.iter().any(|p| glob_match(p, n)))
        .collect();
    if spec.format == ModelFormat::Safetensors {
        for (what, ok) in [
            (
                "*.safetensors",
                chosen.iter().any(|n| n.ends_with(".safetensors")),
            ),
            ("config.json", chosen.iter().any(|n| n == "config.json")),
            (
                "tokenizer.json",
                chosen.iter().any(|n| n == "tokenizer.json"),
            ),
        ] {
            if !ok {
                return Err(PoolError::EntryNotFound {
                    repo: repo.into(),
                    revision: spec.revision.clone(),
                    file: what.into(),
                });
            }
        }
    }
    if chosen.is_empty() {
        return Err(PoolError::EntryNotFound {
            repo: repo.into(),
            revision: spec.revision.clone(),
            file: spec.files.join(" "),
        });
    }
    // Pin every file to the listed commit so a moving branch cannot mix revisions.
    Ok((chosen, commit))
}

/// Register a local model (validated by reading its metadata) under `id` or a derived id.
pub fn import(
    ctx: &Ctx,
    path: &Path,
    id: Option<String>,
    name: Option<String>,
) -> Result<ModelView> {
    let ins = inspect(path)?;
    ctx.info(&format!("hashing {}", ins.model_path.display()));
    let mut files = Vec::new();
    for (fname, fpath, size) in &ins.files {
        files.push(LocalFile {
            name: fname.clone(),
            path: fpath.clone(),
            size_bytes: *size,
            sha256: sha256_file(fpath)?,
        });
    }
    let weights_sha = (ins.format == ModelFormat::Gguf).then(|| files[0].sha256.clone());
    let local = LocalModel {
        source: ModelSource::Import,
        path: ins.model_path.clone(),
        size_bytes: files.iter().map(|f| f.size_bytes).sum(),
        files,
        commit: None,
        added_at: llorch_catalog::unix_now(),
        context_length: ins.context_length,
        quantization: ins.quantization.clone(),
    };
    let chosen = ctx.store.update(|c| {
        let matching = weights_sha.as_ref().and_then(|h| c.entries().into_iter().find(|(s, _)| s.sha256.as_ref() == Some(h)));
        let id = match (id, matching) {
            (Some(id), _) => id,
            (None, Some((s, _))) => s.id,
            (None, None) => slug(ins.name.as_deref().unwrap_or("model"), &ins.model_path),
        };
        match c.get(&id) {
            Some((spec, _)) => {
                if spec.format != ins.format {
                    return Err(PoolError::InvalidModel { path: ins.model_path.clone(), reason: format!("catalog entry `{id}` is {}, the file is {}", spec.format, ins.format) });
                }
                if let (Some(pin), Some(h)) = (&spec.sha256, &weights_sha) {
                    if pin != h {
                        return Err(PoolError::InvalidModel { path: ins.model_path.clone(), reason: format!("sha256 {h} differs from catalog entry `{id}` ({pin}); choose another --id") });
                    }
                }
            }
            None => c.add(ModelSpec {
                id: id.clone(),
                name: name.clone().or(ins.name.clone()).unwrap_or_else(|| id.clone()),
                repo: None,
                revision: "main".into(),
                files: local.files.iter().map(|f| f.name.clone()).collect(),
                format: ins.format,
                architecture: ins.architecture.clone(),
                size_bytes: local.size_bytes,
                sha256: weights_sha.clone(),
            })?,
        }
        c.local.insert(id.clone(), local.clone());
        Ok(id)
    })?;
    let cat = ctx.store.load()?;
    lookup(&cat, &chosen)
}

/// A catalog id from a model name or, failing that, the file stem.
fn slug(name: &str, path: &Path) -> String {
    let base = if name == "model" {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        name.to_string()
    };
    let mut out = String::new();
    for c in base.to_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let out: String = out
        .trim_matches(|c| c == '-' || c == '.' || c == '_')
        .chars()
        .take(64)
        .collect();
    if out.is_empty() {
        "model".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_valid_ids() {
        assert_eq!(
            slug("SmolLM2 135M Instruct", Path::new("/x.gguf")),
            "smollm2-135m-instruct"
        );
        assert_eq!(
            slug("model", Path::new("/a/Qwen2.5-0.5B.Q4_K_M.gguf")),
            "qwen2.5-0.5b.q4_k_m"
        );
        assert!(ModelSpec::valid_id(&slug("--Ünï--", Path::new("/x"))));
    }
}
