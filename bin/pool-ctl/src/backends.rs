//! `backends list` and `status`: what this host can run and what it is running.

use std::path::{Path, PathBuf};

use llorch_catalog::{BackendView, PoolHome, StatusView};
use serde_json::json;

use crate::error::Result;
use crate::hub::HubConfig;
use crate::output::{human_bytes, print_json, print_table};
use crate::{models, procs, worker, Ctx};

/// Detect the backends of this host: its devices, and which backends the `llorch-candled` that
/// `worker spawn` would run (`worker_bin`, else the default one) was built with
/// (`--print-backends`, cached in `home` per binary); a GPU the worker cannot use is not
/// available.
pub fn detect(home: &PoolHome, worker_bin: Option<PathBuf>) -> Vec<BackendView> {
    detect_with(home, worker_bin, None)
}

/// [`detect`], with the number of CUDA GPUs `nvidia-smi` listed when the caller already asked
/// it (`status` does, for the machine view), so that it is not asked twice.
fn detect_with(
    home: &PoolHome,
    worker_bin: Option<PathBuf>,
    smi_gpus: Option<usize>,
) -> Vec<BackendView> {
    let worker_bin =
        worker_bin.or_else(|| std::env::var_os("LLORCH_WORKER_BIN").map(PathBuf::from));
    let compiled = crate::spawn::find_worker_bin(worker_bin)
        .ok()
        .and_then(|bin| compiled_backends(home, &bin));
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let (n, cuda_detail) = cuda_devices(smi_gpus);
    let mac = cfg!(target_os = "macos");
    let metal_detail = if mac { "macOS" } else { "Metal needs macOS" };
    [
        ("cpu", cpus, format!("{cpus} logical CPUs")),
        ("cuda", n, cuda_detail),
        ("metal", u32::from(mac), metal_detail.to_string()),
    ]
    .into_iter()
    .map(|(name, devices, detail)| {
        let built = compiled.as_ref().map(|c| c.iter().any(|b| b == name));
        let available = devices > 0 && built != Some(false);
        let detail = match built {
            Some(false) if devices > 0 => format!(
                "{detail}, but this host's llorch-candled was built without the {name} feature"
            ),
            _ => detail,
        };
        BackendView {
            name: name.into(),
            available,
            devices,
            detail,
            compiled: built,
        }
    })
    .collect()
}

/// The backends a `llorch-candled` binary was built with, from its `--print-backends` (None
/// when it does not answer: an older or broken binary). The answer is kept in
/// `$LLORCH_HOME/worker-backends.json` under the binary's path, size and modification time, so
/// a probe does not start the worker binary each time.
fn compiled_backends(home: &PoolHome, bin: &Path) -> Option<Vec<String>> {
    let meta = std::fs::metadata(bin).ok()?;
    let stamp = format!(
        "{}:{}:{}",
        bin.display(),
        meta.len(),
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos())
    );
    let cache = home.root().join("worker-backends.json");
    let cached: Option<serde_json::Value> = std::fs::read(&cache)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(v) = cached.filter(|v| v["stamp"] == stamp.as_str()) {
        if let Some(list) = string_list(&v["backends"]) {
            return Some(list);
        }
    }
    let out = std::process::Command::new(bin)
        .arg("--print-backends")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let list = string_list(&v["backends"])?;
    // best effort: a read-only home just means asking again next time
    let tmp = cache.with_extension(format!("json.{}", std::process::id()));
    let body = json!({ "stamp": stamp, "backends": list });
    if std::fs::write(&tmp, body.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, &cache);
    }
    Some(list)
}

fn string_list(v: &serde_json::Value) -> Option<Vec<String>> {
    Some(
        v.as_array()?
            .iter()
            .filter_map(|b| b.as_str().map(str::to_string))
            .collect(),
    )
}

/// NVIDIA GPUs the driver exposes (`/proc/driver/nvidia/gpus/*`, else `/dev/nvidiaN`, else the
/// GPUs `nvidia-smi` lists: `smi_gpus` when already asked, else asked now, with its timeout).
fn cuda_devices(smi_gpus: Option<usize>) -> (u32, String) {
    let count = |dir: &str, pred: &dyn Fn(&str) -> bool| {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| pred(&e.file_name().to_string_lossy()))
                    .count() as u32
            })
            .unwrap_or(0)
    };
    let n = count("/proc/driver/nvidia/gpus", &|_| true);
    if n > 0 {
        return (n, format!("{n} NVIDIA GPU(s) (/proc/driver/nvidia/gpus)"));
    }
    let n = count("/dev", &|name| {
        name.strip_prefix("nvidia")
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    });
    if n > 0 {
        return (n, format!("{n} NVIDIA device node(s) in /dev"));
    }
    let n = smi_gpus.unwrap_or_else(|| llorch_catalog::machine::cuda_gpus().len()) as u32;
    if n > 0 {
        return (n, format!("{n} NVIDIA GPU(s) (nvidia-smi)"));
    }
    (
        0,
        "no NVIDIA GPU found (no /proc/driver/nvidia/gpus, no /dev/nvidiaN, none from nvidia-smi)"
            .into(),
    )
}

/// `backends list`.
pub fn list(ctx: &Ctx) -> Result<()> {
    let backends = detect(&ctx.home, None);
    if ctx.json {
        print_json(&json!({ "backends": backends }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = backends
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                if b.available {
                    "yes".into()
                } else {
                    "no".into()
                },
                b.devices.to_string(),
                b.detail.clone(),
            ]
        })
        .collect();
    print_table(&["BACKEND", "AVAILABLE", "DEVICES", "DETAIL"], &rows);
    Ok(())
}

/// `status`.
pub fn status(ctx: &Ctx) -> Result<()> {
    let cat = ctx.store.load()?;
    let machine = llorch_catalog::machine::inventory();
    let smi_gpus = machine.gpus.iter().filter(|g| g.backend == "cuda").count();
    let view = StatusView {
        host: procs::hostname(),
        version: env!("CARGO_PKG_VERSION").into(),
        home: ctx.home.root().display().to_string(),
        hf_cache: HubConfig::from_env().cache_dir.display().to_string(),
        backends: detect_with(&ctx.home, None, Some(smi_gpus)),
        models: models::local_views(&cat),
        workers: worker::views(ctx),
        machine: Some(machine),
    };
    if ctx.json {
        print_json(&view);
        return Ok(());
    }
    println!("host:     {} (llorch-pool {})", view.host, view.version);
    println!("home:     {}", view.home);
    println!("hf cache: {}", view.hf_cache);
    let avail: Vec<&str> = view
        .backends
        .iter()
        .filter(|b| b.available)
        .map(|b| b.name.as_str())
        .collect();
    println!("backends: {}", avail.join(", "));
    if let Some(m) = &view.machine {
        println!(
            "machine:  {} cores, {} of {} memory available",
            m.cpu_cores,
            human_bytes(m.mem_available_bytes),
            human_bytes(m.mem_total_bytes)
        );
        for g in &m.gpus {
            println!(
                "  {}:{} {} ({} free of {})",
                g.backend,
                g.index,
                g.name,
                human_bytes(g.mem_free_bytes),
                human_bytes(g.mem_total_bytes)
            );
        }
    }
    println!("models:   {}", view.models.len());
    for m in &view.models {
        let size = m.local.as_ref().map(|l| l.size_bytes).unwrap_or(0);
        println!("  {} ({}, {})", m.spec.id, m.spec.format, human_bytes(size));
    }
    let alive = view.workers.iter().filter(|w| w.alive).count();
    println!("workers:  {} ({} alive)", view.workers.len(), alive);
    for w in &view.workers {
        println!(
            "  {} {} pid {} {} {}",
            w.record.id,
            w.record.url,
            w.record.pid,
            if w.alive { "alive" } else { "dead" },
            w.rss_bytes.map(human_bytes).unwrap_or_default()
        );
    }
    Ok(())
}
