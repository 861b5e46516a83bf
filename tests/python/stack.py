"""A real llama-orch stack for the Python tests: orchestratord plus one llorch-candled worker
with the SmolLM2 test model, on free loopback ports, with their logs in a temporary directory.

Environment: LLORCH_BIN_DIR (orchestratord, llorch-candled), LLORCH_TEST_MODEL (the GGUF).
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

MODEL_ID = "smollm2-135m"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, token=None, method=None, timeout=30):
    """(status, parsed JSON or None) of one HTTP call; HTTP errors are answers, not raised."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, None


class StackError(RuntimeError):
    pass


class Stack:
    """orchestratord (with `token` as its API token, if given) and one registered worker."""

    def __init__(self, token=None, worker_id="py-worker"):
        self.token = token
        self.worker_id = worker_id
        self.bins = os.environ.get("LLORCH_BIN_DIR", "target/release")
        self.model = os.environ.get("LLORCH_TEST_MODEL")
        if not self.model or not os.path.isfile(self.model):
            raise StackError("LLORCH_TEST_MODEL is not set to the SmolLM2 GGUF")
        self.tmp = tempfile.mkdtemp(prefix="llorch-py-")
        self.procs = []
        self.base = None
        self.orch = None

    def _spawn(self, name, args, env):
        log = os.path.join(self.tmp, f"{name}.log")
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
        self.procs.append((p, log))
        return p, log

    def _wait(self, pred, what, proc, log, timeout=90):
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if proc.poll() is not None:
                raise StackError(f"{what}: exited ({proc.returncode}):\n{open(log).read()[-4000:]}")
            try:
                if pred():
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise StackError(f"{what}: not ready after {timeout} s:\n{open(log).read()[-4000:]}")

    def start(self):
        orch_port, worker_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{orch_port}"
        env = {k: v for k, v in os.environ.items() if k not in ("LLORCH_API_TOKEN", "LLORCH_WORKER_TOKEN")}
        orch_env = dict(env, **({"LLORCH_API_TOKEN": self.token} if self.token else {}))
        self.orch, log = self._spawn(
            "orchestratord",
            [f"{self.bins}/orchestratord", "--bind", f"127.0.0.1:{orch_port}", "--db", f"{self.tmp}/o.sqlite"],
            orch_env,
        )
        self._wait(lambda: request(f"{self.base}/health")[0] == 200, "orchestratord", self.orch, log)
        args = [f"{self.bins}/llorch-candled", "--model", self.model, "--port", str(worker_port),
                "--threads", "2", "--worker-id", self.worker_id, "--model-id", MODEL_ID,
                "--orchestrator-url", self.base]
        if self.token:
            args += ["--orchestrator-token", self.token]
        worker, wlog = self._spawn("worker", args, env)
        self._wait(lambda: self.call("/ready")[0] == 200, "worker registration", worker, wlog)
        return self

    def call(self, path, body=None, method=None, token=None, timeout=60):
        return request(f"{self.base}{path}", body, token or self.token, method, timeout)

    def stop(self):
        for p, _ in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)
