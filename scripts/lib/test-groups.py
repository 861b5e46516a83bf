#!/usr/bin/env python3
"""Pass `cargo test` output through unchanged and record how long each crate's tests took.

Reads cargo's merged stdout/stderr on stdin. A group starts at each `Running unittests src/...`,
`Running tests/...` or `Doc-tests CRATE` line; integration-test binaries (all named `it`) are
counted with the crate whose unit tests ran just before them (cargo runs a package's test
binaries together). Appends "tests: CRATE<TAB>seconds<TAB>ok" lines to the steps file
($LLORCH_STEPS_FILE, see scripts/lib/steps.sh); the last group of a failing run says FAILED.
"""

import os
import re
import sys
import time

RUNNING = re.compile(r"^\s+Running (unittests )?(\S+) \((?:.*/)?deps/([A-Za-z0-9_]+)-[0-9a-f]+\)")
DOCTESTS = re.compile(r"^\s+Doc-tests (\S+)")
FAILED = re.compile(r"^test result: FAILED|^error: test failed")

groups = {}  # label -> seconds, in first-seen order
current, started, crate = None, None, None
failed = set()


def close(now):
    if current is not None:
        groups[current] = groups.get(current, 0.0) + now - started


for line in sys.stdin:
    sys.stdout.write(line)
    sys.stdout.flush()
    now = time.monotonic()
    m = RUNNING.match(line)
    d = DOCTESTS.match(line)
    if m or d:
        close(now)
        if m:
            unit, path, name = m.groups()
            if unit and (path.endswith("src/lib.rs") or path.endswith("src/main.rs")) or crate is None:
                crate = name
            current = f"  tests: {crate.replace('_', '-')}"
        else:
            current = "  tests: doc-tests"
        started = now
    elif FAILED.match(line) and current is not None:
        failed.add(current)
close(time.monotonic())

path = os.environ.get("LLORCH_STEPS_FILE")
if path:
    with open(path, "a") as f:
        for label, secs in groups.items():
            f.write(f"{label}\t{round(secs)}\t{'FAILED' if label in failed else 'ok'}\n")
