#!/usr/bin/env python3
"""Loopback stand-in for the Hugging Face Hub, for offline tests (standard library only).

Serves local directories as dataset repos so that `datasets.load_dataset(..., streaming=True)`
and `huggingface_hub` work against HF_ENDPOINT=http://127.0.0.1:PORT.

    python tests/hubserver.py --port 0 --port-file F --repo OWNER/NAME=DIR [--repo ...]
        [--model-repo OWNER/NAME=DIR ...] [--redirect] [--page-size N] [--log-file F] [--require-token T] [--faults JSON]

Hub endpoints (per repo):
    GET  /api/datasets/{ns}/{name}[/revision/{rev}]         dataset info
    GET  /api/datasets/{ns}/{name}/tree/{rev}[/{path}]      ?recursive= &expand= &cursor=, Link rel="next"
    POST /api/datasets/{ns}/{name}/paths-info/{rev}         form or JSON body: paths=..., expand=...
    HEAD/GET /datasets/{ns}/{name}/resolve/{rev}/{path}     file bytes, one Range (206/416)
    GET  /api/models/{ns}/{name}[/revision/{rev}]           model info (--model-repo: a tokenizer's repo)
    HEAD/GET /{ns}/{name}/resolve/{rev}/{path}              a model repo's file bytes
    GET  /_cdn/{sha256}                                     redirect target of LFS files (--redirect)
    GET  /api/agent-harnesses                               empty registry huggingface_hub asks for

Control endpoints (never faulted, never need a token):
    POST /_ctl/faults   JSON body replaces the fault config (unset keys take FAULT_DEFAULTS),
                        resets the fault counters; answers the new config
    GET  /_ctl/faults   current config plus "fired": {"kind path": times}
    GET  /_ctl/log      JSON list of requests (in-flight ones have status null)
    POST /_ctl/reset    clear log, counters and faults

Fault semantics: file faults apply to resolve/CDN requests whose repo-relative path matches the
glob `match` (and whose Range header matches `range_match`, if set). Each counted kind fires at
most `<kind>_count` times per file path (-1 = every time); at most one body fault per request.
"""

import argparse
import fnmatch
import hashlib
import http.server
import json
import os
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

FAULT_DEFAULTS = {
    "match": "*.parquet",  # fnmatch on the repo-relative path ("*" also matches "/")
    "range_match": None,  # optional fnmatch on the Range header, e.g. "bytes=4-*" = pyarrow body read
    "status": 0, "status_count": 1, "retry_after": None,  # answer this status instead of the file
    "drop_after": -1, "drop_count": 1,  # send N body bytes, then RST (SO_LINGER 0)
    "trunc_after": -1, "trunc_count": 1,  # send N body bytes, then FIN; Content-Length promised more
    "short_after": -1, "short_count": 1,  # consistent headers describing only the first N bytes
    "norange": False, "norange_count": 1,  # the Range header ignored: 200 and the whole file, as some proxies
    "stall_after": -1, "stall_count": 1, "stall_secs": 0.0,  # send N bytes, sleep, send the rest
    "hang_secs": 0.0, "hang_count": 1,  # sleep before sending any header
    "delay": 0.0,  # sleep before every matching request (no count)
    "bandwidth": 0,  # bytes/s cap on each response body, all files; 0 = unlimited
    "api_status": 0, "api_count": 1, "api_match": None,  # /api/ and resolve requests whose path
    # contains the substring api_match (None = all); counted per URL path (query ignored)
}
LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".gz", ".zst", ".jsonl")
COMMIT_DATE = "2024-06-01T00:00:00.000Z"
GIT_REVS = ("main", "refs/heads/main")


class Repo:
    """A directory served as a dataset repo with a single commit."""

    def __init__(self, repo_id, root):
        self.id, self.root = repo_id, os.path.abspath(root)
        if not os.path.isdir(self.root):
            raise SystemExit(f"not a directory: {root}")
        self.files = {}  # relpath -> {size, oid (git blob sha1), sha256, lfs}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                data = open(full, "rb").read()
                self.files[rel] = {
                    "size": len(data),
                    "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "lfs": rel.endswith(LFS_SUFFIXES),
                }
        self.dirs = {rel.rsplit("/", i)[0] for rel in self.files for i in range(1, rel.count("/") + 1)}
        # Deterministic commit: same files -> same sha, whatever the repo is called.
        h = hashlib.sha1()
        for rel in sorted(self.files):
            h.update(f"{rel}\0{self.files[rel]['oid']}\n".encode())
        self.sha = h.hexdigest()
        self.by_sha256 = {f["sha256"]: rel for rel, f in self.files.items()}

    def valid_rev(self, rev):
        return rev in GIT_REVS or rev == self.sha

    def entry(self, path, expand=False):
        if path in self.files:
            f = self.files[path]
            e = {"type": "file", "oid": f["oid"], "size": f["size"], "path": path}
            if f["lfs"]:  # never "xetHash": it would switch huggingface_hub to the Xet protocol
                e["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": 134}
        elif path in self.dirs:
            e = {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        else:
            return None
        if expand:
            e["lastCommit"] = {"id": self.sha, "title": "Initial commit", "date": COMMIT_DATE}
        return e

    def tree(self, path, recursive):
        """Paths under `path` (directories first, like the Hub), or None if it is not a directory."""
        if path and path not in self.dirs:
            return None
        prefix = path + "/" if path else ""

        def under(p):
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])

        return sorted(filter(under, self.dirs)) + sorted(filter(under, self.files))

    def info(self, blobs=False):
        siblings = []
        for rel, f in sorted(self.files.items()):
            s = {"rfilename": rel}
            if blobs:
                s.update(size=f["size"], blobId=f["oid"])
                if f["lfs"]:
                    s["lfs"] = {"size": f["size"], "sha256": f["sha256"], "pointerSize": 134}
            siblings.append(s)
        return {
            "_id": hashlib.md5(self.id.encode()).hexdigest()[:24], "id": self.id,
            "author": self.id.split("/")[0], "sha": self.sha, "lastModified": COMMIT_DATE,
            "createdAt": COMMIT_DATE, "private": False, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(f["size"] for f in self.files.values()),
        }


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True  # a hung fault thread must not keep the process alive
    block_on_close = False
    request_queue_size = 64

    def __init__(self, addr, repos, args, models=None):
        super().__init__(addr, Handler)
        self.repos, self.args, self.models = repos, args, models or {}
        self.lock = threading.Lock()
        self.log, self.fired = [], {}
        self.faults = dict(FAULT_DEFAULTS)
        self.rst = set()  # sockets to close with RST instead of FIN
        self.log_file = open(args.log_file, "a", buffering=1) if args.log_file else None

    def set_faults(self, cfg):
        unknown = set(cfg) - set(FAULT_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        with self.lock:
            self.faults = {**FAULT_DEFAULTS, **cfg}
            self.fired.clear()

    def take(self, kind, key):
        """Count one firing of `kind` for `key`; False once its budget is spent."""
        limit = self.faults[kind + "_count"]
        with self.lock:
            n = self.fired.get(f"{kind} {key}", 0)
            if 0 <= limit <= n:
                return False
            self.fired[f"{kind} {key}"] = n + 1
            return True

    def shutdown_request(self, request):
        # The default does shutdown(SHUT_WR) first, which sends a FIN before the RST we want.
        if request in self.rst:
            self.rst.discard(request)
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.close()
        else:
            super().shutdown_request(request)


class HubError(Exception):
    def __init__(self, status, code, message, headers=None):
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub
    server_version = "hubserver/1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.handle_one()

    do_HEAD = do_POST = do_GET

    def handle_one(self):
        # Always consume a request body so the keep-alive stream stays in sync, even on errors.
        n = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(n) if n else b""
        # Logged before answering, so requests stuck in a hang/stall fault are visible too.
        self.entry = {
            "t": round(time.time(), 3), "method": self.command, "path": self.path,
            "range": self.headers.get("Range"), "status": None, "note": "",
            "client": self.client_address[0], "host": self.headers.get("Host"),
            "auth": self.headers.get("Authorization") is not None,
        }
        if not self.path.startswith("/_ctl/"):
            with self.server.lock:
                self.server.log.append(self.entry)
        try:
            self.route()
        except HubError as e:
            self.send_json(e.status, {"error": e.message}, {"X-Error-Code": e.code, "X-Error-Message": e.message, **e.headers}, e.code)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
            self.done(None, "client went away")

    def done(self, status, note=""):
        self.entry["status"] = self.entry["status"] or status
        self.entry["t_end"] = round(time.time(), 3)  # with "t": when the response was being sent
        self.entry["note"] = (self.entry["note"] + " " + note).strip()
        if self.server.log_file and not self.path.startswith("/_ctl/"):
            with self.server.lock:
                self.server.log_file.write(json.dumps(self.entry) + "\n")

    def send_json(self, status, obj, headers=None, note=""):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.done(status, note)

    # ---- routing -----------------------------------------------------------------------
    def route(self):
        srv, f = self.server, self.server.faults
        url = urllib.parse.urlsplit(self.path)
        # Split before unquoting: revisions and paths may arrive as "refs%2Fheads%2Fmain", "sample%2F10BT".
        segs = [urllib.parse.unquote(s) for s in url.path.split("/") if s]
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if segs[:1] == ["_ctl"]:
            return self.control(segs[1:])
        if segs == ["api", "agent-harnesses"]:
            return self.send_json(200, {"standardEnvVars": [], "harnesses": {}})
        if segs[:1] == ["_cdn"] and len(segs) == 2 and srv.args.redirect:
            for repo in srv.repos.values():  # the blob hash is the capability, as on a real CDN
                if segs[1] in repo.by_sha256:
                    return self.serve_file(repo, repo.by_sha256[segs[1]])
            raise HubError(404, "EntryNotFound", "no such blob")

        is_api = segs[:2] == ["api", "datasets"] and len(segs) >= 4
        is_resolve = segs[:1] == ["datasets"] and len(segs) >= 6 and segs[3] == "resolve"
        is_model_api = segs[:2] == ["api", "models"] and len(segs) >= 4
        is_model_resolve = segs[:1] != ["datasets"] and len(segs) >= 5 and segs[2] == "resolve"
        if is_model_api or is_model_resolve:
            return self.model_route(segs, is_model_api, url.path)
        if not (is_api or is_resolve):
            raise HubError(404, "NotFound", "endpoint not served by hubserver")
        if f["api_status"] and (f["api_match"] is None or f["api_match"] in self.path) and srv.take("api", url.path):
            headers = {} if f["retry_after"] is None else {"Retry-After": str(f["retry_after"])}
            return self.send_json(f["api_status"], {"error": "injected"}, headers, f"FAULT api_status {f['api_status']}")
        if srv.args.require_token and self.headers.get("Authorization") != f"Bearer {srv.args.require_token}":
            raise HubError(401, "RepoNotFound", "Invalid credentials in Authorization header")

        ns, name = segs[2:4] if is_api else segs[1:3]
        repo = srv.repos.get(f"{ns}/{name}")
        if repo is None:  # the Hub answers 401 (not 404) so private repos do not leak
            raise HubError(404 if self.command == "HEAD" else 401, "RepoNotFound", "Repository not found")
        if is_resolve:
            rev, path = self.split_rev(segs[4:])
            self.check_rev(repo, rev)
            if path not in repo.files:
                raise HubError(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.sha})
            return self.serve_file(repo, path)

        rest = segs[4:]
        if not rest or rest[0] == "revision":
            if rest:
                self.check_rev(repo, "/".join(rest[1:]))
            return self.send_json(200, repo.info(query.get("blobs") == "true"))
        if rest[0] == "tree" and len(rest) >= 2:
            return self.tree(repo, url, query, *self.split_rev(rest[1:]))
        if rest[0] == "paths-info" and len(rest) >= 2 and self.command == "POST":
            self.check_rev(repo, "/".join(rest[1:]))
            return self.paths_info(repo)
        raise HubError(404, "NotFound", "endpoint not served by hubserver")

    def model_route(self, segs, is_api, path):
        """A model repo: its info (with the commit sha) and its files; the same token and API faults."""
        srv, f = self.server, self.server.faults
        if f["api_status"] and (f["api_match"] is None or f["api_match"] in self.path) and srv.take("api", path):
            return self.send_json(f["api_status"], {"error": "injected"}, {}, f"FAULT api_status {f['api_status']}")
        if srv.args.require_token and self.headers.get("Authorization") != f"Bearer {srv.args.require_token}":
            # a gated repo without an accepted license / token: 401 with the gated error code
            raise HubError(401, "GatedRepo", "Access to model is restricted. You must have access to it and be authenticated")
        ns, name = segs[2:4] if is_api else segs[0:2]
        repo = srv.models.get(f"{ns}/{name}")
        if repo is None:
            raise HubError(404 if self.command == "HEAD" else 401, "RepoNotFound", "Repository not found")
        if is_api:
            rest = segs[4:]
            if rest and rest[0] == "revision":
                self.check_rev(repo, "/".join(rest[1:]))
            elif rest:
                raise HubError(404, "NotFound", "endpoint not served by hubserver")
            return self.send_json(200, repo.info())
        rev, fpath = self.split_rev(segs[3:])
        self.check_rev(repo, rev)
        if fpath not in repo.files:
            raise HubError(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.sha})
        return self.serve_file(repo, fpath)

    @staticmethod
    def split_rev(segs):
        """[rev, *path] -> (rev, path); also accepts an unencoded refs/heads/main."""
        n = 3 if segs[:2] == ["refs", "heads"] else 1
        return "/".join(segs[:n]), "/".join(segs[n:])

    @staticmethod
    def check_rev(repo, rev):
        if not repo.valid_rev(rev):
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}", {"X-Repo-Commit": repo.sha})

    def control(self, rest):
        srv = self.server
        if rest == ["log"]:
            with srv.lock:
                return self.send_json(200, list(srv.log))
        if rest == ["reset"] and self.command == "POST":
            with srv.lock:
                srv.log.clear()
            srv.set_faults({})
            return self.send_json(200, {"ok": True})
        if rest == ["faults"]:
            if self.command == "POST":
                try:
                    srv.set_faults(json.loads(self.body or b"{}"))
                except ValueError as e:
                    return self.send_json(400, {"error": str(e)})
            with srv.lock:
                return self.send_json(200, {**srv.faults, "fired": dict(srv.fired)})
        return self.send_json(404, {"error": "unknown control endpoint"})

    # ---- API -----------------------------------------------------------------------------
    def tree(self, repo, url, query, rev, path):
        self.check_rev(repo, rev)
        paths = repo.tree(path, query.get("recursive") == "true")
        if paths is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": repo.sha})
        size, cursor = self.server.args.page_size, int(query.get("cursor", 0))
        headers = {"X-Repo-Commit": repo.sha}
        if cursor + size < len(paths):
            nxt = urllib.parse.urlencode({**query, "cursor": cursor + size})
            headers["Link"] = f'<http://{self.headers.get("Host")}{url.path}?{nxt}>; rel="next"'
        page = [repo.entry(p, query.get("expand") == "true") for p in paths[cursor:cursor + size]]
        self.send_json(200, page, headers, f"tree {len(page)} of {len(paths)}")

    def paths_info(self, repo):
        text = self.body.decode()
        if "json" in (self.headers.get("Content-Type") or ""):
            data = json.loads(text or "{}")
            paths, expand = data.get("paths", []), bool(data.get("expand"))
        else:
            form = urllib.parse.parse_qs(text)
            paths, expand = form.get("paths", []), form.get("expand", [""])[-1].lower() == "true"
        found = [e for e in (repo.entry(p.strip("/"), expand) for p in paths) if e]
        self.send_json(200, found, {"X-Repo-Commit": repo.sha})

    # ---- files ---------------------------------------------------------------------------
    def serve_file(self, repo, path):
        srv, f, meta = self.server, self.server.faults, repo.files[path]
        size, rng = meta["size"], self.headers.get("Range")
        hit = fnmatch.fnmatch(path, f["match"]) and (f["range_match"] is None or fnmatch.fnmatch(rng or "", f["range_match"]))
        if hit and f["delay"]:
            time.sleep(f["delay"])
        if hit and f["hang_secs"] and srv.take("hang", path):
            self.entry["note"] = f"FAULT hang {f['hang_secs']}s"
            time.sleep(f["hang_secs"])
        if hit and f["status"] and srv.take("status", path):
            headers = {"X-Repo-Commit": repo.sha}
            if f["retry_after"] is not None:
                headers["Retry-After"] = str(f["retry_after"])
            return self.send_json(f["status"], {"error": "injected"}, headers, f"FAULT status {f['status']}")

        etag = f'"{meta["sha256"] if meta["lfs"] else meta["oid"]}"'
        headers = {"X-Repo-Commit": repo.sha, "ETag": etag, "Accept-Ranges": "bytes"}
        if meta["lfs"]:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(size)})
            if srv.args.redirect and not self.path.startswith("/_cdn/"):
                host = self.headers.get("Host")
                headers.update({"Location": f"http://{host}/_cdn/{meta['sha256']}", "Content-Length": "0"})
                self.send_response(302)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                return self.done(302, "redirect")

        start, end, status = 0, size - 1, 200
        if rng and hit and f["norange"] and self.command == "GET" and srv.take("norange", path):
            self.entry["note"], rng = "FAULT norange", None
        if rng:
            r = parse_range(rng, size)
            if r is None:
                self.send_response(416)
                for k, v in {**headers, "Content-Range": f"bytes */{size}", "Content-Length": "0"}.items():
                    self.send_header(k, v)
                self.end_headers()
                return self.done(416)
            (start, end), status = r, 206

        # At most one body fault per request; HEAD has no body, so it never spends one.
        mode, cut = None, None
        if hit and self.command == "GET":
            for kind in ("drop", "trunc", "short", "stall"):
                if f[kind + "_after"] >= 0 and srv.take(kind, path):
                    mode, cut = kind, f[kind + "_after"]
                    break
        if mode == "short" and cut < end - start + 1:
            end, status = start + cut - 1, 206  # headers now honestly describe fewer bytes
        length = end - start + 1

        self.send_response(status)
        headers.update({"Content-Type": "application/octet-stream", "Content-Length": str(length)})
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        note = f"bytes {start}-{end}/{size}" + (f"; FAULT {mode} after {cut}" if mode else "")
        if self.command == "HEAD":
            return self.done(status, note)
        with open(os.path.join(repo.root, path), "rb") as fh:
            if mode is None and not f["bandwidth"] and length > 0:
                # the usual case: the kernel copies the file's bytes to the socket (sendfile), no read +
                # write through Python; the client sees the same bytes, the server costs less CPU (it
                # shares the cores with the client it stands in the Hub for, in the benchmarks)
                self.wfile.flush()
                self.connection.sendfile(fh, offset=start, count=length)
                return self.done(status, note)
            fh.seek(start)
            body = fh.read(length)

        if mode in ("drop", "trunc", "stall") and cut < length:
            self.write(body[:cut])
            if mode == "stall":
                time.sleep(f["stall_secs"])
                self.write(body[cut:])
            else:
                self.close_connection = True
                if mode == "drop":
                    srv.rst.add(self.connection)
            return self.done(status, note)
        self.write(body)
        self.done(status, note)

    def write(self, data):
        bw = self.server.faults["bandwidth"]
        if not bw:
            self.wfile.write(data)
            return self.wfile.flush()
        chunk, t0 = max(1, min(65536, bw // 10)), time.monotonic()
        for i in range(0, len(data), chunk):
            piece = data[i:i + chunk]
            ahead = (i + len(piece)) / bw - (time.monotonic() - t0)  # wait until this piece is "earned"
            if ahead > 0:
                time.sleep(ahead)
            self.wfile.write(piece)
            self.wfile.flush()


def parse_range(header, size):
    """One `bytes=a-b | a- | -n` range -> inclusive (start, end); None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    try:
        a, b = spec.strip().split("-")
        if unit.strip() != "bytes":
            return None
        if a == "":
            start, end = size - int(b), size - 1
            start = max(0, start) if int(b) > 0 else size
        else:
            start, end = int(a), min(int(b), size - 1) if b else size - 1
    except ValueError:  # also multi-range specs, which we do not serve
        return None
    return (start, end) if 0 <= start <= end else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="only 127.0.0.1 is accepted")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME=DIR")
    ap.add_argument("--model-repo", action="append", default=[], metavar="OWNER/NAME=DIR")
    ap.add_argument("--redirect", action="store_true", help="302 LFS files to /_cdn/<sha256> like the Hub")
    ap.add_argument("--page-size", type=int, default=1000, help="tree entries per page")
    ap.add_argument("--log-file", help="append one JSON line per request")
    ap.add_argument("--require-token", help="401 unless Authorization: Bearer <token>")
    ap.add_argument("--faults", help="initial fault config (JSON)")
    args = ap.parse_args(argv)
    if args.host != "127.0.0.1":
        ap.error("refusing to bind anything but 127.0.0.1")
    if args.page_size < 1:
        ap.error("--page-size must be >= 1")

    if not args.repo and not args.model_repo:
        ap.error("give at least one --repo or --model-repo")
    repos, models = {}, {}
    for specs, into in ((args.repo, repos), (args.model_repo, models)):
        for spec in specs:
            repo_id, sep, root = spec.partition("=")
            if not sep or repo_id.count("/") != 1:
                ap.error(f"--repo/--model-repo wants OWNER/NAME=DIR, got {spec!r}")
            into[repo_id] = Repo(repo_id, root)
    srv = Server(("127.0.0.1", args.port), repos, args, models)
    if args.faults:
        srv.set_faults(json.loads(args.faults))
    port = srv.server_address[1]
    if args.port_file:  # write-then-rename, so a waiting reader never sees a partial number
        tmp = f"{args.port_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(str(port))
        os.replace(tmp, args.port_file)
    print(f"LISTENING {port}", flush=True)
    for repo in list(repos.values()) + list(models.values()):
        print(f"repo {repo.id} sha={repo.sha} files={len(repo.files)}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    sys.exit(main())
