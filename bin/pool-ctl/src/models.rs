//! `llorch-pool models ...`: catalog queries, register/unregister, download, import, verify, rm.

use std::path::{Path, PathBuf};
use std::time::Duration;

use llorch_catalog::{Catalog, ModelFormat, ModelSource, ModelSpec, ModelView};
use serde_json::json;

use crate::acquire::{download, import};
use crate::cli::{FormatArg, ModelsCmd, RegisterArgs};
use crate::download::DownloadOptions;
use crate::error::{PoolError, Result};
use crate::inspect::sha256_file;
use crate::output::{human_bytes, print_json, print_table};
use crate::Ctx;

/// Run one `models` subcommand.
pub fn run(ctx: &Ctx, cmd: ModelsCmd) -> Result<()> {
    match cmd {
        ModelsCmd::Catalog => catalog(ctx),
        ModelsCmd::List => list(ctx),
        ModelsCmd::Info { id } => info(ctx, &id),
        ModelsCmd::Register(args) => register(ctx, args),
        ModelsCmd::Unregister { id } => {
            ctx.store
                .update(|c| c.remove(&id).map_err(PoolError::from))?;
            ctx.done(
                &json!({ "id": id, "unregistered": true }),
                &format!("unregistered {id} (files, if any, were left in place)"),
            );
            Ok(())
        }
        ModelsCmd::Rm { id } => rm(ctx, &id),
        ModelsCmd::Verify { id } => verify(ctx, &id),
        ModelsCmd::Fit(args) => crate::fit::run(ctx, args),
        ModelsCmd::Progress { id } => crate::progress::show(ctx, &id),
        ModelsCmd::Download {
            id,
            retries,
            retry_delay,
        } => {
            let opts = DownloadOptions {
                retries,
                retry_delay: Duration::from_secs_f64(retry_delay.max(0.0)),
                progress: !ctx.quiet && !ctx.json,
                progress_file: None,
            };
            let view = download(ctx, &id, &opts)?;
            let path = view
                .local
                .as_ref()
                .map(|l| l.path.display().to_string())
                .unwrap_or_default();
            ctx.done(&view, &format!("{id}: downloaded and verified, {path}"));
            Ok(())
        }
        ModelsCmd::Import { path, id, name } => {
            let view = import(ctx, &path, id, name)?;
            let size = view.local.as_ref().map(|l| l.size_bytes).unwrap_or(0);
            ctx.done(
                &view,
                &format!(
                    "imported {} ({}, {}, {})",
                    view.spec.id,
                    view.spec.format,
                    view.spec.architecture,
                    human_bytes(size)
                ),
            );
            Ok(())
        }
    }
}

/// The view of one entry: downloaded when its local files are still there.
pub fn view(cat: &Catalog, spec: ModelSpec, builtin: bool) -> ModelView {
    let local = cat.local.get(&spec.id).cloned();
    let downloaded = local.as_ref().is_some_and(|l| l.path.exists());
    ModelView {
        spec,
        builtin,
        downloaded,
        local,
    }
}

/// Views of the models whose files are on this host.
pub fn local_views(cat: &Catalog) -> Vec<ModelView> {
    cat.entries()
        .into_iter()
        .map(|(s, b)| view(cat, s, b))
        .filter(|v| v.local.is_some())
        .collect()
}

fn lookup(cat: &Catalog, id: &str) -> Result<ModelView> {
    let (spec, builtin) = cat
        .get(id)
        .ok_or_else(|| llorch_catalog::CatalogError::NotFound(id.to_string()))?;
    Ok(view(cat, spec, builtin))
}

fn catalog(ctx: &Ctx) -> Result<()> {
    let cat = ctx.store.load()?;
    let views: Vec<ModelView> = cat
        .entries()
        .into_iter()
        .map(|(s, b)| view(&cat, s, b))
        .collect();
    if ctx.json {
        print_json(&json!({ "models": views }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.spec.id.clone(),
                v.spec.format.to_string(),
                v.spec.architecture.clone(),
                human_bytes(v.spec.size_bytes),
                if v.downloaded {
                    "yes".into()
                } else {
                    "no".into()
                },
                v.spec.repo.clone().unwrap_or_else(|| "(local)".into()),
            ]
        })
        .collect();
    print_table(
        &["ID", "FORMAT", "ARCH", "SIZE", "DOWNLOADED", "REPO"],
        &rows,
    );
    Ok(())
}

fn list(ctx: &Ctx) -> Result<()> {
    let cat = ctx.store.load()?;
    let views = local_views(&cat);
    if ctx.json {
        print_json(&json!({ "models": views }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .filter_map(|v| {
            let l = v.local.as_ref()?;
            let state = if v.downloaded {
                format!("{:?}", l.source).to_lowercase()
            } else {
                "missing".into()
            };
            Some(vec![
                v.spec.id.clone(),
                v.spec.format.to_string(),
                human_bytes(l.size_bytes),
                state,
                l.path.display().to_string(),
            ])
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no models on this host; see `llorch-pool models catalog`, `models download ID`, `models import PATH`");
    }
    print_table(&["ID", "FORMAT", "SIZE", "SOURCE", "PATH"], &rows);
    Ok(())
}

fn info(ctx: &Ctx, id: &str) -> Result<()> {
    let cat = ctx.store.load()?;
    let v = lookup(&cat, id)?;
    if ctx.json {
        print_json(&v);
        return Ok(());
    }
    let s = &v.spec;
    println!(
        "id:           {}{}",
        s.id,
        if v.builtin { " (built-in)" } else { "" }
    );
    println!("name:         {}", s.name);
    println!("format:       {}", s.format);
    println!("architecture: {}", s.architecture);
    println!("size:         {}", human_bytes(s.size_bytes));
    if let Some(repo) = &s.repo {
        println!("repo:         {repo}@{}", s.revision);
        println!("files:        {}", s.files.join(", "));
    }
    if let Some(h) = &s.sha256 {
        println!("sha256:       {h}");
    }
    match &v.local {
        Some(l) => {
            println!(
                "local:        {} ({}, {})",
                l.path.display(),
                format!("{:?}", l.source).to_lowercase(),
                if v.downloaded { "present" } else { "MISSING" }
            );
            for f in &l.files {
                println!(
                    "  {}  {}  {}",
                    f.sha256,
                    human_bytes(f.size_bytes),
                    f.path.display()
                );
            }
        }
        None => println!("local:        not on this host"),
    }
    Ok(())
}

fn register(ctx: &Ctx, a: RegisterArgs) -> Result<()> {
    if a.repo.split('/').count() != 2 || a.repo.split('/').any(str::is_empty) {
        return Err(PoolError::Usage(format!(
            "--repo must look like `org/name`, got `{}`",
            a.repo
        )));
    }
    if let Some(h) = &a.sha256 {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PoolError::Usage("--sha256 must be 64 hex digits".into()));
        }
    }
    let format = match a.format {
        Some(FormatArg::Gguf) => ModelFormat::Gguf,
        Some(FormatArg::Safetensors) => ModelFormat::Safetensors,
        None if a.files.iter().any(|f| f.ends_with(".gguf")) => ModelFormat::Gguf,
        None => ModelFormat::Safetensors,
    };
    let spec = ModelSpec {
        id: a.id.clone(),
        name: a
            .name
            .unwrap_or_else(|| a.repo.rsplit('/').next().unwrap_or_default().to_string()),
        repo: Some(a.repo),
        revision: a.revision,
        files: a.files,
        format,
        architecture: a.architecture,
        size_bytes: a.size,
        sha256: a.sha256.map(|h| h.to_lowercase()),
    };
    ctx.store
        .update(|c| c.add(spec.clone()).map_err(PoolError::from))?;
    let cat = ctx.store.load()?;
    ctx.done(&lookup(&cat, &a.id)?, &format!("registered {}", a.id));
    Ok(())
}

fn rm(ctx: &Ctx, id: &str) -> Result<()> {
    let cat = ctx.store.load()?;
    let v = lookup(&cat, id)?;
    let local = v.local.ok_or_else(|| PoolError::NotDownloaded(id.into()))?;
    let mut freed = 0u64;
    let mut deleted = Vec::new();
    if local.source == ModelSource::Download {
        for f in &local.files {
            freed += remove_cached_file(&f.path, &mut deleted)?;
        }
        // Drop the snapshot directory when nothing else is left in it.
        let snapshot = if local.path.is_dir() {
            Some(local.path.as_path())
        } else {
            local.path.parent()
        };
        if let Some(dir) = snapshot {
            let _ = std::fs::remove_dir(dir);
        }
    }
    ctx.store.update(|c| {
        c.local.remove(id);
        Ok::<_, PoolError>(())
    })?;
    let msg = match local.source {
        ModelSource::Download => format!("removed {id}: freed {}", human_bytes(freed)),
        ModelSource::Import => format!(
            "forgot {id}; imported files at {} were left in place",
            local.path.display()
        ),
    };
    ctx.done(
        &json!({ "id": id, "freed_bytes": freed, "deleted": deleted }),
        &msg,
    );
    Ok(())
}

/// Delete a snapshot link and its blob unless another snapshot still points at the blob.
fn remove_cached_file(link: &Path, deleted: &mut Vec<PathBuf>) -> Result<u64> {
    let blob = std::fs::canonicalize(link).ok();
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link).map_err(|e| PoolError::io("remove", link, e))?;
        deleted.push(link.to_path_buf());
    }
    let Some(blob) = blob else { return Ok(0) };
    // link = <repo>/snapshots/<commit>/<file>; blob = <repo>/blobs/<etag>.
    let repo_dir = blob.parent().and_then(Path::parent).map(Path::to_path_buf);
    if let Some(repo_dir) = repo_dir {
        if still_referenced(&repo_dir.join("snapshots"), &blob) {
            return Ok(0);
        }
    }
    let size = blob.metadata().map(|m| m.len()).unwrap_or(0);
    std::fs::remove_file(&blob).map_err(|e| PoolError::io("remove", &blob, e))?;
    deleted.push(blob);
    Ok(size)
}

fn still_referenced(dir: &Path, blob: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => still_referenced(&p, blob),
            Ok(_) => std::fs::canonicalize(&p).is_ok_and(|t| t == blob),
            Err(_) => false,
        }
    })
}

fn verify(ctx: &Ctx, id: &str) -> Result<()> {
    let cat = ctx.store.load()?;
    let v = lookup(&cat, id)?;
    let local = v.local.ok_or_else(|| PoolError::NotDownloaded(id.into()))?;
    let mut results = Vec::new();
    let mut failure = None;
    for f in &local.files {
        let actual = sha256_file(&f.path)?;
        let ok = actual == f.sha256;
        if !ok && failure.is_none() {
            failure = Some(PoolError::VerifyFailed {
                file: f.path.display().to_string(),
                expected: f.sha256.clone(),
                actual: actual.clone(),
            });
        }
        if !ctx.json && !ctx.quiet {
            eprintln!(
                "{}  {}  {}",
                if ok { "ok      " } else { "MISMATCH" },
                actual,
                f.path.display()
            );
        }
        results.push(json!({ "name": f.name, "path": f.path, "sha256": actual, "ok": ok }));
    }
    if let Some(e) = failure {
        if ctx.json {
            print_json(&json!({ "id": id, "ok": false, "files": results }));
        }
        return Err(e);
    }
    ctx.done(
        &json!({ "id": id, "ok": true, "files": results }),
        &format!("{id}: all {} file(s) verified", local.files.len()),
    );
    Ok(())
}
