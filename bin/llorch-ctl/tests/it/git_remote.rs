//! `llorch pool git pull|status|build` over a real sshd against a real git checkout.
//! `build` runs a stand-in `cargo` (first on the remote PATH via `$HOME/.cargo/bin`) that prints
//! its arguments: a real release build of the workspace would take far too long for a test.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{run, write_script, Sshd};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn pull_status_and_build_run_in_the_checkout() {
    let Some(sshd) = Sshd::start("pull_status_and_build_run_in_the_checkout") else {
        return;
    };
    let d = sshd.dir.path();
    std::fs::create_dir_all(d.join("up.git")).unwrap();
    git(&d.join("up.git"), &["init", "-q", "--bare"]);
    git(d, &["clone", "-q", "up.git", "work"]);
    std::fs::write(d.join("work/README"), "one\n").unwrap();
    git(&d.join("work"), &["add", "README"]);
    git(&d.join("work"), &["commit", "-qm", "one"]);
    git(&d.join("work"), &["push", "-q", "origin", "HEAD:main"]);
    git(d, &["clone", "-q", "up.git", "checkout dir"]);
    std::fs::write(d.join("work/README"), "two\n").unwrap();
    git(&d.join("work"), &["commit", "-qam", "two; $(touch pwned)"]);
    git(&d.join("work"), &["push", "-q", "origin", "HEAD:main"]);

    let home = d.join("home");
    std::fs::create_dir_all(home.join(".cargo/bin")).unwrap();
    write_script(&home.join(".cargo/bin/cargo"), "echo \"cargo $*\"");
    let repo = d.join("checkout dir");
    let env_home = format!("HOME={}", home.display());
    sshd.add_host(
        "src",
        &["--repo", repo.to_str().unwrap(), "--env", &env_home],
    );

    let r = run(sshd.llorch(&["pool", "git", "pull", "--host", "src"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let head = git(&d.join("work"), &["rev-parse", "--short", "HEAD"]);
    assert!(
        r.stdout
            .contains(&format!("now at {head} two; $(touch pwned)")),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("README")).unwrap(),
        "two\n"
    );

    std::fs::write(repo.join("new file"), "x").unwrap();
    let r = run(sshd.llorch(&["pool", "git", "status", "--short", "--host", "src"]));
    assert_eq!(
        (r.code, r.stdout.trim()),
        (Some(0), "?? \"new file\""),
        "{}",
        r.stderr
    );

    let r = run(sshd.llorch(&[
        "pool",
        "git",
        "build",
        "--host",
        "src",
        "--features",
        "cuda",
        "--",
        "--locked",
    ]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        r.stdout.trim(),
        "cargo build --release -p llorch-candled -p pool-ctl -p orchestratord -p llorch-ctl --features llorch-candled/cuda --locked"
    );
    let r = run(sshd.llorch(&["pool", "git", "build", "--host", "src"]));
    assert!(
        r.stdout.trim().ends_with("-p llorch-ctl"),
        "CPU-only host: no features: {}",
        r.stdout
    );
    assert!(
        r.stderr.contains("backend features: cpu only"),
        "{}",
        r.stderr
    );
    assert!(!d.join("pwned").exists() && !repo.join("pwned").exists());

    sshd.add_host("norepo", &[]);
    let r = run(sshd.llorch(&["pool", "git", "pull", "--host", "norepo"]));
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("has no `repo` in its profile"),
        "{}",
        r.stderr
    );
}
