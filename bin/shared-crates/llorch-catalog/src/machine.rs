//! What this host has for placement: CPU cores, memory (`/proc/meminfo`), GPUs (`nvidia-smi`).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::views::{GpuView, MachineView};

/// Longest wait for `nvidia-smi`.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(5);

/// Inspect this host.
pub fn inventory() -> MachineView {
    let cpu_cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let (mem_total_bytes, mem_available_bytes) = memory();
    let mut gpus = cuda_gpus();
    if cfg!(target_os = "macos") {
        // Apple silicon: the GPU shares the system memory.
        gpus.push(GpuView {
            backend: "metal".into(),
            index: 0,
            name: "Apple GPU (unified memory)".into(),
            mem_total_bytes,
            mem_free_bytes: mem_available_bytes,
        });
    }
    MachineView {
        cpu_cores,
        mem_total_bytes,
        mem_available_bytes,
        gpus,
    }
}

/// (total, available) bytes of system memory.
pub fn memory() -> (u64, u64) {
    match std::fs::read_to_string("/proc/meminfo") {
        Ok(text) => parse_meminfo(&text),
        Err(_) => sysconf_memory(),
    }
}

/// `MemTotal` and `MemAvailable` (kB in the file) in bytes; `MemFree` when `MemAvailable` is
/// missing (kernels before 3.14).
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    let total = field("MemTotal").unwrap_or(0);
    let avail = field("MemAvailable")
        .or_else(|| field("MemFree"))
        .unwrap_or(0);
    (total, avail)
}

fn sysconf_memory() -> (u64, u64) {
    // SAFETY: sysconf has no preconditions.
    let (pages, avail, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_AVPHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let b = |n: libc::c_long| u64::try_from(n).unwrap_or(0) * u64::try_from(size).unwrap_or(0);
    (b(pages), b(avail))
}

/// One NVIDIA GPU by index (None: no such GPU, or `nvidia-smi` missing or failing).
pub fn cuda_gpu(index: u32) -> Option<GpuView> {
    cuda_gpus().into_iter().find(|g| g.index == index)
}

/// Resident memory of this process (`VmRSS`), in bytes; 0 where `/proc` is missing.
pub fn process_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// NVIDIA GPUs with memory, from `nvidia-smi` (none when it is missing, fails or hangs).
pub fn cuda_gpus() -> Vec<GpuView> {
    let child = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total,memory.free",
            "--format=csv,noheader,nounits",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return Vec::new();
    };
    let start = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) => return Vec::new(),
            Ok(None) if start.elapsed() < NVIDIA_SMI_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Vec::new();
            }
        }
    }
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        use std::io::Read;
        let _ = so.read_to_string(&mut out);
    }
    parse_nvidia_smi(&out)
}

/// Lines `index, name, total MiB, free MiB`.
pub fn parse_nvidia_smi(text: &str) -> Vec<GpuView> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let [index, name, total, free] = f.as_slice() else {
                return None;
            };
            Some(GpuView {
                backend: "cuda".into(),
                index: index.parse().ok()?,
                name: name.to_string(),
                mem_total_bytes: total.parse::<u64>().ok()? * 1024 * 1024,
                mem_free_bytes: free.parse::<u64>().ok()? * 1024 * 1024,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parses() {
        let (t, a) =
            parse_meminfo("MemTotal:       16000 kB\nMemFree: 10 kB\nMemAvailable:    8000 kB\n");
        assert_eq!((t, a), (16000 * 1024, 8000 * 1024));
        assert_eq!(
            parse_meminfo("MemTotal: 4 kB\nMemFree: 2 kB\n"),
            (4096, 2048)
        );
        let m = inventory();
        assert!(m.cpu_cores >= 1 && m.mem_total_bytes >= m.mem_available_bytes);
        assert!(process_rss_bytes() > 0);
    }

    /// Recorded `nvidia-smi --query-gpu=index,name,memory.total,memory.free
    /// --format=csv,noheader,nounits` outputs.
    #[test]
    fn nvidia_smi_outputs_with_0_1_and_4_gpus() {
        // a driver with no GPU prints nothing on stdout (the error goes to stderr, exit != 0)
        assert!(parse_nvidia_smi("").is_empty());
        let one = parse_nvidia_smi("0, NVIDIA H200, 143771, 143000\nbad line\n");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].mem_total_bytes, 143771 * 1024 * 1024);
        assert_eq!(one[0].mem_free_bytes, 143000 * 1024 * 1024);
        assert_eq!(one[0].name, "NVIDIA H200");
        assert_eq!(one[0].backend, "cuda");
        let four = parse_nvidia_smi(
            "0, NVIDIA GeForce RTX 4090, 24564, 24211\n\
             1, NVIDIA GeForce RTX 4090, 24564, 1023\n\
             2, Tesla T4, 15360, 15100\n\
             3, NVIDIA A100-SXM4-80GB, 81920, 81050\n",
        );
        assert_eq!(
            four.iter().map(|g| g.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(four[1].mem_free_bytes, 1023 * 1024 * 1024);
        assert_eq!(four[2].name, "Tesla T4");
        // a failing driver: a message instead of rows, and [N/A] fields
        assert!(parse_nvidia_smi(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
        )
        .is_empty());
        assert!(parse_nvidia_smi("0, NVIDIA A10, [N/A], [N/A]\n").is_empty());
        // on this host nvidia-smi is missing or lists real GPUs: never a panic
        let _ = cuda_gpus();
        assert!(cuda_gpu(999).is_none());
    }
}
