//! The shared ssh runners (`llorch-ssh`) with llorch's error type and hints.

use llorch_ssh::Captured;

use crate::error::CliError;
use crate::host::Remote;

/// Run with stdout inherited and stderr filtered; returns the remote exit code.
pub fn run_streaming(remote: &Remote, remote_cmd: &str) -> Result<u8, CliError> {
    let code = llorch_ssh::run_streaming(&remote.ssh(), remote_cmd)?;
    if code == 127 {
        eprintln!(
            "llorch: host {}: command not found (exit 127); set pool_bin or repo in the host profile",
            remote.label()
        );
    }
    Ok(code)
}

/// Run and collect stdout/stderr (for probes).
pub fn run_captured(remote: &Remote, remote_cmd: &str) -> Result<Captured, CliError> {
    Ok(llorch_ssh::run_captured(&remote.ssh(), remote_cmd)?)
}
