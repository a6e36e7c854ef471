"""Test helpers around tests/hubserver.py: start it as a subprocess, steer its faults, and build
the environment a client subprocess needs to talk to it (HF_ENDPOINT is read at import time)."""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SERVER = Path(__file__).with_name("hubserver.py")
FINEWEB_EDU = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "fineweb-edu")
# Never route loopback control calls through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Hub:
    def __init__(self, proc, port, output):
        self.proc, self.port, self.output = proc, port, output
        self.url = f"http://127.0.0.1:{port}"

    def _call(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with _opener.open(req, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            raise ValueError(f"{path}: {e.code} {e.read().decode()}") from None

    def faults(self, **kw):
        """Replace the fault config (see hubserver.FAULT_DEFAULTS); returns it. No args = all off."""
        return self._call("/_ctl/faults", kw)

    def fired(self):
        """{"kind path": times} for the current fault config."""
        return self._call("/_ctl/faults")["fired"]

    def reset(self):
        """Clear the request log, fault counters and faults."""
        self._call("/_ctl/reset", {})

    def log(self):
        """Requests seen so far: dicts with method, path, range, status, note, client, host, auth."""
        return self._call("/_ctl/log")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_hub(repos, tmp_path, models=None, **server_flags):
    """Start hubserver serving {"owner/name": dir} as dataset repos and `models` ({"owner/name": dir})
    as model repos. server_flags map to CLI flags: redirect=True, page_size=2, log_file=...,
    require_token="t", faults={...}."""
    tmp = Path(tempfile.mkdtemp(prefix="hub-", dir=tmp_path))
    port_file = tmp / "port"
    cmd = [sys.executable, str(SERVER), "--port", "0", "--port-file", str(port_file)]
    for repo_id, root in repos.items():
        cmd += ["--repo", f"{repo_id}={root}"]
    for repo_id, root in (models or {}).items():
        cmd += ["--model-repo", f"{repo_id}={root}"]
    for key, value in server_flags.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value not in (None, False):
            cmd += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    output = tmp / "server.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20  # hashing the repo files happens before the port is known
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise RuntimeError(f"hubserver did not start:\n{output.read_text()}")
        time.sleep(0.02)
    return Hub(proc, int(port_file.read_text()), output)


def hub_env(hub, tmp_path, timeout=5):
    """os.environ for a client subprocess that talks only to `hub`, with a fresh, token-free HF_HOME."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("HF_", "HUGGING_FACE", "HUGGINGFACE"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update({
        "HF_ENDPOINT": hub.url,
        "HF_HOME": tempfile.mkdtemp(prefix="hf_home-", dir=tmp_path),
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",  # else datasets pings S3 on every load
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": str(timeout),
        "HF_HUB_DOWNLOAD_TIMEOUT": str(timeout),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    return env
