//! Process facts and control on Unix: detached spawn, liveness (pid + start time, zombies count
//! as dead), resident memory, signals.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Start `cmd` in its own session (`setsid`), so it outlives the terminal and llorch-pool and
/// does not receive the terminal's Ctrl-C.
pub fn spawn_detached(cmd: &mut Command) -> io::Result<Child> {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Fields of `/proc/<pid>/stat` after the command name (field 3 onwards).
#[cfg(target_os = "linux")]
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Start time of `pid` (Linux: clock ticks since boot), to detect pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        proc_stat(pid)?.get(19)?.parse().ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Whether `pid` runs and is the process that was recorded (same start time when known).
pub fn is_alive(pid: u32, recorded_start: Option<u64>) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        let Some(stat) = proc_stat(pid) else {
            return false;
        };
        if matches!(stat.first().map(String::as_str), Some("Z" | "X" | "x")) {
            return false;
        }
        match (
            recorded_start,
            stat.get(19).and_then(|s| s.parse::<u64>().ok()),
        ) {
            (Some(rec), Some(now)) => rec == now,
            _ => true,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = recorded_start;
        // SAFETY: kill with signal 0 only checks for existence and permission.
        let r = unsafe { libc::kill(pid as i32, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * u64::try_from(page).ok()?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let out = Command::new("ps")
            .args(["-o", "rss=", "-p", &pid.to_string()])
            .output()
            .ok()?;
        let kb: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        Some(kb * 1024)
    }
}

/// Send `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a pid we recorded; pid 0 / negative pids are excluded.
    let r = unsafe { libc::kill(pid as i32, sig) };
    if r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Poll until `done` returns true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Name of this host.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its full length; the result is NUL-terminated or truncated.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_has_memory() {
        let me = std::process::id();
        assert!(is_alive(me, start_time(me)));
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(
            !is_alive(me, start_time(me).map(|s| s + 1).or(Some(0)))
                || cfg!(not(target_os = "linux"))
        );
        assert!(!is_alive(0, None));
    }

    #[test]
    fn exited_child_is_dead_even_as_zombie() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(200));
        // Not yet reaped: a zombie, which must count as dead.
        assert!(!is_alive(pid, None));
        child.wait().unwrap();
    }
}
