#!/usr/bin/env python3
"""Check that the workspace's `rust-version` is true: every member inherits it, and no resolved
dependency declares a newer one (its own `rust-version`). Clippy's `incompatible_msrv` lint (on
in `cargo clippy -D warnings`) checks our own use of the standard library against the same value.

usage: scripts/check-msrv.py   (exit 1 with the offenders listed)
"""

import json
import subprocess
import sys


def version(v):
    parts = [int(x) for x in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--quiet"])
)
members = set(meta["workspace_members"])
resolved = {n["id"] for n in meta["resolve"]["nodes"]}
packages = [p for p in meta["packages"] if p["id"] in resolved]
ours = {p["rust_version"] for p in packages if p["id"] in members}
problems = []
if len(ours) != 1 or None in ours:
    problems.append(f"members must all inherit one rust-version (found {sorted(map(str, ours))})")
else:
    msrv = ours.pop()
    newer = sorted(
        (p["name"], p["version"], p["rust_version"])
        for p in packages
        if p["id"] not in members and p.get("rust_version")
        and version(p["rust_version"]) > version(msrv)
    )
    problems += [f"{n} {v} needs rust {r} > workspace rust-version {msrv}" for n, v, r in newer]
for p in problems:
    print(f"check-msrv: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check-msrv: rust-version {msrv} holds for {len(members)} members and "
      f"{len(packages) - len(members)} dependencies")
