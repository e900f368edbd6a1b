#!/usr/bin/env python3
"""Capture real HTTP clients' request heads, byte-exact, into tests/data/heads/.

A tiny HTTP/1.1 server listens on 127.0.0.1:18080 (loopback only) and records
the raw bytes of every request head (request line, header lines in wire order
and casing, CRLFs, up to and including the blank line).  The driver then runs
each client in turn (browsers headful under Xvfb, text browsers, command-line
tools, HTTP libraries of several languages), attributes the requests that
arrive while a client runs to that client, and writes one file per
client/kind/origin:

    tests/data/heads/<client>__<kind>__<origin>.http

  kind    document | style | image | script | fetch | favicon  (browsers)
          document                                           (text browsers)
          plain                                              (tools, libraries)
  origin  localhost  fetched via http://localhost:18080   (a secure context)
          plain      fetched via http://shop.test:18080   (not a secure context)

It also writes tests/data/heads/index.tsv, versions.tsv and README.md.
Install the clients first with scripts/capture_heads_install.sh; this script
installs nothing, it only reports what is missing.  Standard library only.

    python3 scripts/capture_heads.py                 # everything
    python3 scripts/capture_heads.py --only curl,firefox   # some, keep the rest
    python3 scripts/capture_heads.py --list          # client names
"""

import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "heads")
PORT = 18080
PLAIN_HOST = "shop.test"
VENV = os.environ.get("HEADS_VENV", "/tmp/heads-venv")
NODE_DIR = os.environ.get("HEADS_NODE_DIR", "/tmp/heads-node")
WORK = tempfile.mkdtemp(prefix="capture-heads-")

ORIGINS = {"localhost": "localhost", "plain": PLAIN_HOST}
BROWSER_KINDS = ("document", "style", "image", "script", "fetch")

# --------------------------------------------------------------------------
# The capture server
# --------------------------------------------------------------------------

PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>floodguard capture</title>
<link rel="stylesheet" href="/capture/style.css">
<script src="/capture/app.js"></script>
</head>
<body>
<h1>floodguard capture</h1>
<p><img src="/capture/pixel.png" alt="pixel" width="1" height="1"></p>
<p id="api">fetch: pending</p>
<script>
fetch('/capture/api').then(function (r) { return r.text(); }).then(function (t) {
  document.getElementById('api').textContent = 'fetch: ' + t;
});
</script>
</body>
</html>
"""
STYLE = b"body { font-family: sans-serif; }\nh1 { color: #333; }\n"
SCRIPT = b"window.captureScriptLoaded = true;\n"
API = b'{"ok":true}\n'


def _png_1x1():
    def chunk(tag, data):
        c = tag + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    idat = zlib.compress(b"\x00\x00\x00\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PNG = _png_1x1()

ROUTES = {
    "/capture/page.html": ("document", "text/html; charset=utf-8", PAGE),
    "/capture/style.css": ("style", "text/css; charset=utf-8", STYLE),
    "/capture/pixel.png": ("image", "image/png", PNG),
    "/capture/app.js": ("script", "text/javascript; charset=utf-8", SCRIPT),
    "/capture/api": ("fetch", "application/json", API),
    "/favicon.ico": ("favicon", "image/png", PNG),
}


class Capture:
    """What the server saw, attributed to the client that runs now."""

    def __init__(self):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.current = None  # (client, family, origin)
        self.heads = {}      # (client, kind, origin) -> bytes (first one wins)
        self.counts = {}     # (client, kind, origin) -> n seen
        self.events = []     # log lines for the current client
        self.stray = 0

    def start(self, client, family, origin):
        with self.lock:
            self.current = (client, family, origin)
            self.events = []

    def stop(self):
        with self.lock:
            self.current = None
            return list(self.events)

    def record(self, head, path):
        with self.cond:
            if self.current is None:
                self.stray += 1
                return
            client, family, origin = self.current
            route = ROUTES.get(path)
            kind = route[0] if route else "other"
            if kind == "document" and family in ("tool", "library"):
                kind = "plain"
            key = (client, kind, origin)
            self.counts[key] = self.counts.get(key, 0) + 1
            self.heads.setdefault(key, head)
            self.events.append("%s %s" % (kind, head.split(b"\r\n", 1)[0].decode("latin-1")))
            self.cond.notify_all()

    def note(self, line):
        with self.lock:
            if self.current is not None:
                self.events.append(line)

    def wait_for(self, client, origin, kinds, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                have = {k for (c, k, o) in self.heads if c == client and o == origin}
                if set(kinds) <= have:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))


CAP = Capture()


def read_head(conn, buf):
    """Read until the blank line ending a head; return (head, rest) or (None, buf)."""
    while True:
        ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") for i in [buf.find(sep)] if i >= 0]
        if ends:
            end = min(ends)
            return buf[:end], buf[end:]
        if len(buf) > 65536:
            return None, buf
        try:
            data = conn.recv(65536)
        except (socket.timeout, OSError):
            return None, buf
        if not data:
            return None, buf
        buf += data
        if buf[:1] == b"\x16":  # a TLS ClientHello (an https upgrade attempt)
            return b"TLS", b""
        if buf.startswith(b"PRI * HTTP/2.0"):
            return b"H2", b""


def serve_conn(conn):
    conn.settimeout(30)
    buf = b""
    try:
        while True:
            head, buf = read_head(conn, buf)
            if head is None:
                return
            if head in (b"TLS", b"H2"):
                CAP.note("connection opened with %s bytes, closed (not recorded)" %
                         ("a TLS ClientHello" if head == b"TLS" else "an HTTP/2 preface"))
                return
            lines = head.split(b"\n")
            try:
                method, target, version = lines[0].rstrip(b"\r").split(b" ", 2)
            except ValueError:
                method, target, version = b"GET", b"/", b"HTTP/1.0"
            path = target.decode("latin-1").split("?", 1)[0]
            if "://" in path:  # absolute-form
                path = "/" + path.split("://", 1)[1].split("/", 1)[-1]
            CAP.record(head, path)
            fields = {}
            for line in lines[1:]:
                if b":" in line:
                    name, _, value = line.partition(b":")
                    fields[name.strip().lower()] = value.strip().lower()
            # discard a body, if any
            length = int(fields.get(b"content-length", b"0") or 0)
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            buf = buf[length:]
            route = ROUTES.get(path)
            if route is None:
                status, ctype, body = b"404 Not Found", b"text/plain; charset=utf-8", b"not found\n"
            else:
                status, ctype, body = b"200 OK", route[1].encode(), route[2]
            conn_hdr = fields.get(b"connection", b"")
            close = version.strip() == b"HTTP/1.0" and b"keep-alive" not in conn_hdr or b"close" in conn_hdr
            resp = (b"HTTP/1.1 " + status + b"\r\n"
                    b"Server: floodguard-capture\r\n"
                    b"Content-Type: " + ctype + b"\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                    b"Cache-Control: no-store\r\n"
                    b"Connection: " + (b"close" if close else b"keep-alive") + b"\r\n\r\n")
            conn.sendall(resp + (b"" if method == b"HEAD" else body))
            if close:
                return
    except OSError:
        return
    finally:
        try:
            conn.close()
        except OSError:
            pass


def serve(port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)

    def loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def log(*a):
    print(*a, flush=True)


def which(cmd):
    return shutil.which(cmd)


def run(cmd, timeout=60, env=None, cwd=None, input=None):
    """Run a command with a timeout; never raise. Returns (rc, combined output)."""
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, cwd=cwd,
                           input=input, start_new_session=True)
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        return "timeout", ((e.stdout or b"") + (e.stderr or b"")).decode("utf-8", "replace")
    except OSError as e:
        return "error", str(e)


def first_line(text):
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def version_of(cmd, pick=first_line, timeout=30):
    rc, out = run(cmd, timeout=timeout)
    v = pick(out) if out else ""
    return v or "?"


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except OSError:
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def ensure_hosts():
    try:
        with open("/etc/hosts") as f:
            text = f.read()
    except OSError:
        text = ""
    if re.search(r"^\s*127\.0\.0\.1\s+(.*\s)?%s(\s|$)" % re.escape(PLAIN_HOST), text, re.M):
        return True
    try:
        with open("/etc/hosts", "a") as f:
            f.write(("" if text.endswith("\n") or not text else "\n") + "127.0.0.1 %s\n" % PLAIN_HOST)
        log("added '127.0.0.1 %s' to /etc/hosts" % PLAIN_HOST)
        return True
    except OSError as e:
        log("cannot add %s to /etc/hosts (%s); run: echo '127.0.0.1 %s' >> /etc/hosts"
            % (PLAIN_HOST, e, PLAIN_HOST))
        return False


def url(origin, port):
    return "http://%s:%d/capture/page.html" % (ORIGINS[origin], port)


# --------------------------------------------------------------------------
# Xvfb, browsers
# --------------------------------------------------------------------------

class Xvfb:
    def __init__(self):
        self.proc = None
        self.display = None

    def start(self):
        if self.proc:
            return self.display
        if not which("Xvfb"):
            return None
        for n in range(99, 120):
            if not os.path.exists("/tmp/.X%d-lock" % n):
                break
        self.display = ":%d" % n
        self.proc = subprocess.Popen(["Xvfb", self.display, "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        for _ in range(50):
            if os.path.exists("/tmp/.X11-unix/X%d" % n):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        return self.display

    def stop(self):
        if self.proc:
            kill_group(self.proc)
            self.proc = None


XVFB = Xvfb()

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-default-browser-check", "--password-store=basic"]

# Quiet Firefox's first-run pages and background services; none of these
# changes what Firefox sends to a page's server.
FIREFOX_PREFS = """\
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("browser.aboutwelcome.enabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.policy.dataSubmissionPolicyBypassNotification", true);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("app.update.auto", false);
user_pref("app.normandy.enabled", false);
user_pref("browser.safebrowsing.update.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("browser.tabs.warnOnClose", false);
"""


def drive_browser(client, family, origin, port, argv_for):
    """Open the page in a browser, wait for all subresources and the fetch, kill it."""
    env = dict(os.environ)
    if family == "browser":
        display = XVFB.start()
        if not display:
            return "Xvfb missing"
        env["DISPLAY"] = display
    else:
        env.pop("DISPLAY", None)
    profile = tempfile.mkdtemp(prefix=client + "-", dir=WORK)
    argv = argv_for(profile, url(origin, port))
    with open(os.path.join(WORK, "%s-%s.log" % (client, origin)), "wb") as logf:
        p = subprocess.Popen(argv, stdout=logf, stderr=logf, env=env, start_new_session=True)
        try:
            ok = CAP.wait_for(client, origin, BROWSER_KINDS, timeout=60)
            if ok:
                CAP.wait_for(client, origin, BROWSER_KINDS + ("favicon",), timeout=4)
                time.sleep(1)
        finally:
            kill_group(p)
    return None if ok else "timed out waiting for all of " + ", ".join(BROWSER_KINDS)


def chromium_bin():
    return which("chromium") or which("chromium-browser")


def firefox_bin():
    return which("firefox-esr") or which("firefox")


def chromium_argv(profile, u):
    return [chromium_bin()] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile, u]


def chromium_headless_argv(profile, u):
    return [chromium_bin(), "--headless=new"] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile, u]


def firefox_argv(profile, u):
    with open(os.path.join(profile, "user.js"), "w") as f:
        f.write(FIREFOX_PREFS)
    return [firefox_bin(), "-no-remote", "-profile", profile, "-new-window", u]


def firefox_headless_argv(profile, u):
    argv = firefox_argv(profile, u)
    return argv[:1] + ["-headless"] + argv[1:]


# --------------------------------------------------------------------------
# Non-browser clients: (name, family, needs, versions, argv builder)
# --------------------------------------------------------------------------

VPY = os.path.join(VENV, "bin", "python")

PY_SNIPPETS = {
    "python-requests": "import requests, sys; requests.get(sys.argv[1], timeout=10)",
    "python-httpx": "import httpx, sys; httpx.get(sys.argv[1], timeout=10)",
    "python-urllib": "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=10).read()",
    "python-urllib3": "import urllib3, sys; urllib3.PoolManager().request('GET', sys.argv[1], timeout=10)",
    "python-aiohttp": ("import aiohttp, asyncio, sys\n"
                       "async def main():\n"
                       "    async with aiohttp.ClientSession() as s:\n"
                       "        async with s.get(sys.argv[1]) as r:\n"
                       "            await r.read()\n"
                       "asyncio.run(main())\n"),
}

NODE_SNIPPETS = {
    "node-fetch-builtin": ("fetch.mjs", "const r = await fetch(process.argv[2]); await r.text();\n"),
    "node-axios": ("axios.cjs", "const axios = require('axios');\n"
                   "axios.get(process.argv[2]).then(() => {}, (e) => { console.error(e.message); process.exit(1); });\n"),
    "node-got": ("got.mjs", "import got from 'got';\nawait got(process.argv[2]).text();\n"),
    "node-node-fetch": ("node-fetch.cjs", "const fetch = require('node-fetch');\n"
                        "fetch(process.argv[2]).then((r) => r.text()).catch((e) => { console.error(e.message); process.exit(1); });\n"),
    "node-http": ("http.cjs", "const http = require('http');\n"
                  "http.get(process.argv[2], (res) => { res.resume(); res.on('end', () => {}); })"
                  ".on('error', (e) => { console.error(e.message); process.exit(1); });\n"),
}

JAVA_SNIPPETS = {
    "java-httpclient": ("HeadsHttpClient.java", """\
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
public class HeadsHttpClient {
    public static void main(String[] args) throws Exception {
        HttpClient c = HttpClient.newHttpClient();
        c.send(HttpRequest.newBuilder(URI.create(args[0])).build(), HttpResponse.BodyHandlers.ofString());
    }
}
"""),
    "java-httpurlconnection": ("HeadsUrlConnection.java", """\
import java.io.InputStream;
import java.net.HttpURLConnection;
import java.net.URL;
public class HeadsUrlConnection {
    public static void main(String[] args) throws Exception {
        HttpURLConnection c = (HttpURLConnection) new URL(args[0]).openConnection();
        try (InputStream in = c.getInputStream()) { in.readAllBytes(); }
    }
}
"""),
    "java-okhttp": ("HeadsOkHttp.java", """\
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.Response;
public class HeadsOkHttp {
    public static void main(String[] args) throws Exception {
        OkHttpClient c = new OkHttpClient();
        try (Response r = c.newCall(new Request.Builder().url(args[0]).build()).execute()) { r.body().string(); }
        c.dispatcher().executorService().shutdown();
        c.connectionPool().evictAll();
    }
}
"""),
}

GO_SRC = """\
package main

import (
	"io"
	"net/http"
	"os"
)

func main() {
	r, err := http.Get(os.Args[1])
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
}
"""


def write_work(name, text):
    path = os.path.join(WORK, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def okhttp_cp():
    jars = []
    for pat in ("okhttp", "okio"):
        cands = sorted(f for f in os.listdir("/usr/share/java") if f.startswith(pat) and f.endswith(".jar")) \
            if os.path.isdir("/usr/share/java") else []
        # prefer the unversioned symlink (okhttp.jar / okio.jar)
        pick = [c for c in cands if c == pat + ".jar"] or cands
        if not pick:
            return None
        jars.append(os.path.join("/usr/share/java", pick[0]))
    return ":".join(jars)


def node_module_version(mod):
    import json
    try:
        with open(os.path.join(NODE_DIR, "node_modules", mod, "package.json")) as f:
            return json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return "?"


def tool_clients():
    """Yield (client, family, missing-or-None, version-fn, argv(url)-fn, extra-env)."""
    C = []

    def add(client, family, need, ver, argv, env=None, timeout=60):
        C.append((client, family, need, ver, argv, env, timeout))

    term = {"TERM": "dumb"}
    # text browsers
    add("lynx", "text-browser", ["lynx"], lambda: version_of(["lynx", "-version"], lambda t: first_line(t).replace(" Version", "").split(" (")[0]),
        lambda u: ["lynx", "-dump", u], term)
    add("w3m", "text-browser", ["w3m"], lambda: version_of(["w3m", "-version"], lambda t: first_line(t).split(",")[0].split("version ")[-1]),
        lambda u: ["w3m", "-dump", u], term)
    add("links2", "text-browser", ["links2"], lambda: version_of(["links2", "-version"]),
        lambda u: ["links2", "-dump", u], term)
    add("elinks", "text-browser", ["elinks"], lambda: version_of(["elinks", "--version"]),
        lambda u: ["elinks", "-no-home", "-dump", u], term)
    # command-line tools
    add("curl", "tool", ["curl"], lambda: version_of(["curl", "--version"], lambda t: " ".join(first_line(t).split()[i] for i in (0, 1, 3, 4))),
        lambda u: ["curl", "-s", "-o", "/dev/null", u])
    add("wget", "tool", ["wget"], lambda: version_of(["wget", "--version"], lambda t: first_line(t).split(" built")[0]),
        lambda u: ["wget", "-q", "-O", "/dev/null", u])
    add("wget2", "tool", ["wget2"], lambda: version_of(["wget2", "--version"], lambda t: first_line(t).split(" - ")[0]),
        lambda u: ["wget2", "-q", "-O", "/dev/null", u])
    add("aria2c", "tool", ["aria2c"], lambda: version_of(["aria2c", "--version"]),
        lambda u: ["aria2c", "-q", "--allow-overwrite=true", "-d", WORK, "-o", "aria2.out", u])
    add("ab", "tool", ["ab"], lambda: version_of(["ab", "-V"], lambda t: "ApacheBench " + first_line(t).split("Version ")[1].split()[0]),
        lambda u: ["ab", "-q", "-n", "1", "-c", "1", u])
    add("httpie", "tool", ["http"], lambda: "HTTPie %s (%s)" % (version_of(["http", "--version"]), script_python("http")),
        lambda u: ["http", "--ignore-stdin", "--print=", "GET", u])
    # Python
    add("python-urllib", "library", [sys.executable],
        lambda: "Python %d.%d.%d urllib" % sys.version_info[:3],
        lambda u: [sys.executable, "-c", PY_SNIPPETS["python-urllib"], u])
    for name, mod in (("python-requests", "requests"), ("python-httpx", "httpx"),
                      ("python-aiohttp", "aiohttp"), ("python-urllib3", "urllib3")):
        add(name, "library", [VPY],
            (lambda mod=mod: version_of([VPY, "-c", "import %s, sys; print('%s', %s.__version__, "
                                         "'(Python %%d.%%d.%%d)' %% sys.version_info[:3])" % (mod, mod, mod)])),
            (lambda u, name=name: [VPY, "-c", PY_SNIPPETS[name], u]))
    # Node
    for name, (fname, src) in NODE_SNIPPETS.items():
        mod = {"node-axios": "axios", "node-got": "got", "node-node-fetch": "node-fetch"}.get(name)
        if name == "node-fetch-builtin":
            ver = lambda: version_of(["node", "-p", "'Node ' + process.version + ' fetch (undici ' + process.versions.undici + ')'"])
        elif name == "node-http":
            ver = lambda: version_of(["node", "-p", "'Node ' + process.version + ' http'"])
        else:
            ver = (lambda mod=mod: "%s %s (Node %s)" % (mod, node_module_version(mod),
                                                        version_of(["node", "--version"])))
        add(name, "library", ["node"], ver,
            (lambda u, fname=fname, src=src: ["node", write_node(fname, src), u]),
            {"NODE_PATH": os.path.join(NODE_DIR, "node_modules")})
    # Java
    java_ver = lambda: version_of(["java", "-version"], lambda t: "OpenJDK " + first_line(t).split('"')[1])
    for name, (fname, src) in JAVA_SNIPPETS.items():
        if name == "java-okhttp":
            cp = okhttp_cp()
            ver = (lambda: "OkHttp %s (%s)" % (
                version_of(["dpkg-query", "-W", "-f=${Version}", "libokhttp-java"]), java_ver()))
            add(name, "library", ["java"] + ([] if cp else ["/usr/share/java/okhttp.jar"]), ver,
                (lambda u, fname=fname, src=src: ["java", "-cp", okhttp_cp(), write_work("java/" + fname, src), u]),
                None, 120)
        else:
            label = {"java-httpclient": "java.net.http.HttpClient", "java-httpurlconnection": "java.net.HttpURLConnection"}[name]
            add(name, "library", ["java"], (lambda label=label: "%s (%s)" % (label, java_ver())),
                (lambda u, fname=fname, src=src: ["java", write_work("java/" + fname, src), u]), None, 120)
    # PHP
    add("php-file-get-contents", "library", ["php"], lambda: version_of(["php", "-v"], lambda t: " ".join(first_line(t).split()[:2]) + " file_get_contents"),
        lambda u: ["php", "-r", "file_get_contents($argv[1]);", u])
    add("php-curl", "library", ["php"],
        lambda: version_of(["php", "-r", "echo 'php-curl (libcurl ', curl_version()['version'], ', PHP ', PHP_VERSION, ')';"]),
        lambda u: ["php", "-r", "$c = curl_init($argv[1]); curl_setopt($c, CURLOPT_RETURNTRANSFER, true); "
                   "curl_exec($c); curl_close($c);", u])
    # Ruby, Perl
    add("ruby-net-http", "library", ["ruby"], lambda: version_of(["ruby", "-v"], lambda t: " ".join(first_line(t).split()[:2]) + " Net::HTTP"),
        lambda u: ["ruby", "-rnet/http", "-e", "Net::HTTP.get(URI(ARGV[0]))", u])
    add("perl-lwp", "library", ["perl"],
        lambda: version_of(["perl", "-MLWP", "-e", "printf qq{LWP::UserAgent %s (Perl %vd)}, $LWP::VERSION, $^V"]),
        lambda u: ["perl", "-MLWP::UserAgent", "-e", "LWP::UserAgent->new->get($ARGV[0])", u])
    add("perl-http-tiny", "library", ["perl"],
        lambda: version_of(["perl", "-MHTTP::Tiny", "-e", "printf qq{HTTP::Tiny %s (Perl %vd)}, $HTTP::Tiny::VERSION, $^V"]),
        lambda u: ["perl", "-MHTTP::Tiny", "-e", "HTTP::Tiny->new->get($ARGV[0])", u])
    # Go
    add("go-net-http", "library", ["go"], lambda: version_of(["go", "version"], lambda t: first_line(t).replace("go version ", "") + " net/http"),
        lambda u: ["go", "run", write_work("go/main.go", GO_SRC), u],
        {"GOCACHE": os.path.join(os.environ.get("HOME", "/tmp"), ".cache", "go-build"),
         "GO111MODULE": "off", "GOFLAGS": "", "GOTOOLCHAIN": "local", "GOPROXY": "off"}, 300)
    return C


def script_python(cmd):
    """The Python a script such as /usr/bin/http runs on, from its #! line."""
    try:
        with open(which(cmd), "rb") as f:
            interp = f.readline()[2:].decode().split()
        return version_of(interp + ["--version"]) if interp else "?"
    except (OSError, TypeError, UnicodeDecodeError):
        return "?"


def write_node(fname, src):
    path = os.path.join(NODE_DIR, "capture-" + fname)
    if os.path.isdir(NODE_DIR):
        with open(path, "w") as f:
            f.write(src)
        return path
    return write_work(fname, src)


def browser_clients():
    return [
        ("chromium", "browser", chromium_bin, chromium_argv, lambda: version_of([chromium_bin(), "--version"], lambda t: first_line(t).split(" built")[0])),
        ("firefox", "browser", firefox_bin, firefox_argv, lambda: version_of([firefox_bin(), "--version"])),
        ("chromium-headless", "headless", chromium_bin, chromium_headless_argv,
         lambda: version_of([chromium_bin(), "--version"], lambda t: first_line(t).split(" built")[0]) + " --headless=new"),
        ("firefox-headless", "headless", firefox_bin, firefox_headless_argv,
         lambda: version_of([firefox_bin(), "--version"]) + " -headless"),
    ]


# --------------------------------------------------------------------------
# Output: .http files, index.tsv, versions.tsv, README.md
# --------------------------------------------------------------------------

FAMILY_ORDER = {"browser": 0, "headless": 1, "text-browser": 2, "tool": 3, "library": 4}
KIND_ORDER = {k: i for i, k in enumerate(("document", "style", "image", "script", "fetch", "favicon", "plain", "other"))}


def fname(client, kind, origin):
    return "%s__%s__%s.http" % (client, kind, origin)


def write_heads(results_client):
    written = []
    for (client, kind, origin), head in sorted(CAP.heads.items()):
        if client != results_client or kind == "other":
            continue
        path = os.path.join(OUT, fname(client, kind, origin))
        with open(path, "wb") as f:
            f.write(head)
        written.append(os.path.basename(path))
    return written


def read_tsv(path):
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if line and not line.startswith("#"):
                    rows.append(line.split("\t"))
    return rows


def write_index(families):
    rows = []
    for f in sorted(os.listdir(OUT)):
        if not f.endswith(".http"):
            continue
        client, kind, origin = f[:-5].split("__")
        rows.append((f, client, families.get(client, "?"), kind, origin))
    rows.sort(key=lambda r: (FAMILY_ORDER.get(r[2], 9), r[1], r[4], KIND_ORDER.get(r[3], 9)))
    with open(os.path.join(OUT, "index.tsv"), "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write("\t".join(r) + "\n")
    return rows


README_HEAD = """\
# Captured HTTP request heads

Real request heads, byte-exact, from real browsers, text browsers, command-line
tools and HTTP libraries, for testing header-order / fingerprint / bot
detection against traffic we did not write ourselves, and for replay in a
load-test harness.  Generated by `scripts/capture_heads.py`; do not edit the
`.http` files by hand.

## Files

`<client>__<kind>__<origin>.http` holds exactly the bytes the client sent for
one request head: request line, header lines in wire order and casing, values,
CRLF line ends, up to and including the blank line (no body; all captured
requests are GETs).  Nothing is sanitised.

* **kind**: `document` (top-level navigation to `/capture/page.html`), `style`
  (`/capture/style.css`), `image` (`/capture/pixel.png`), `script`
  (`/capture/app.js`), `fetch` (`fetch('/capture/api')` run by the page),
  `favicon` (the browser's own `/favicon.ico` request, kept because it is real
  browser traffic with its own header set); text browsers only fetch the
  `document`; command-line tools and libraries fetch `/capture/page.html` once
  with their default headers (no User-Agent or other header set by us): kind
  `plain`.
* **origin**: `localhost`, fetched via `http://localhost:{port}` (a *secure
  context* for browsers, so they send `Sec-Fetch-*` and, Chromium, the
  `Sec-CH-UA*` client hints); `plain`, fetched via `http://shop.test:{port}`
  (`127.0.0.1 shop.test` in /etc/hosts), a non-localhost plain-HTTP origin,
  where browsers send no `Sec-Fetch-*` / client-hint headers.  Tools and
  libraries are captured on both (their heads differ only in `Host`).
* The server listened on 127.0.0.1 port **{port}**, so the `Host` values are
  `localhost:{port}` / `shop.test:{port}` and browsers' `Referer` carries
  that port too (no captured request has an `Origin` header: every one is a
  same-origin GET).  Node's built-in fetch (undici) sends
  `sec-fetch-mode: cors` on both origins; it is not a browser.

`index.tsv` has one line per file: `file<TAB>client<TAB>family<TAB>kind<TAB>origin`,
family one of `browser`, `headless`, `text-browser`, `tool`, `library`.
`versions.tsv` has `client<TAB>family<TAB>version<TAB>status` for every client
the script knows, captured or not.

Browsers ran headful under Xvfb (Debian 12 packages), with a fresh profile each
run: Chromium with `{chromium_flags} --user-data-dir=<fresh dir>`, Firefox with
`-no-remote -profile <fresh dir>` plus a `user.js` that only quiets first-run
pages and background services (nothing that changes request headers).
`chromium-headless` is the same Chromium with `--headless=new` (its UA says
`HeadlessChrome`); `firefox-headless` is the same Firefox with `-headless`
(no display; its UA does not say so).  Each browser run was killed once the page's five requests
(and the favicon) had arrived; the first request of each kind is the one kept.

## Clients and versions

Captured on {date} (Debian 12 bookworm, x86_64).

| client | family | version | kinds | origins |
| --- | --- | --- | --- | --- |
"""

README_TAIL = """
## Re-capturing

```sh
scripts/capture_heads_install.sh && python3 scripts/capture_heads.py
```

The install script (root; apt-get, pip into `/tmp/heads-venv`, npm into
`/tmp/heads-node`) is idempotent.  The capture script installs nothing; it
prints which clients are missing and skips them.  A full run replaces every
`.http` file here; `--only a,b` re-captures some clients and keeps the rest.
All traffic stays on 127.0.0.1; every client runs under a timeout.

## Not captured, and notes

{notes}
"""


def write_readme(versions, index_rows, port, notes):
    by_client = {}
    for f, client, family, kind, origin in index_rows:
        d = by_client.setdefault(client, {"family": family, "kinds": [], "origins": []})
        if kind not in d["kinds"]:
            d["kinds"].append(kind)
        if origin not in d["origins"]:
            d["origins"].append(origin)
    lines = []
    vrows = sorted(versions, key=lambda r: (FAMILY_ORDER.get(r[1], 9), r[0]))
    for client, family, version, status in vrows:
        d = by_client.get(client)
        if not d:
            continue
        kinds = sorted(d["kinds"], key=lambda k: KIND_ORDER.get(k, 9))
        lines.append("| %s | %s | %s | %s | %s |" % (client, family, version.replace("|", "/"),
                                                     ", ".join(kinds), ", ".join(sorted(d["origins"]))))
    date = time.strftime("%Y-%m-%d")
    head = README_HEAD.format(port=port, date=date, chromium_flags=" ".join(CHROMIUM_FLAGS))
    with open(os.path.join(OUT, "README.md"), "w", encoding="utf-8") as f:
        f.write(head + "\n".join(lines) + "\n" + README_TAIL.format(notes=notes))


STATIC_NOTES = """\
* Only Chromium, not Google Chrome: Chrome (and Edge, Safari, mobile
  browsers) is not packaged in Debian and nothing outside the package
  registries can be downloaded here.  Chromium's `sec-ch-ua` brand list says
  `"Chromium"` where Chrome's says `"Google Chrome"`; the rest of the head
  (order, Accept values) comes from the same network stack and should match
  Chrome of the same version, but no Chrome head was at hand to compare.
* The browsers' `document` heads come from a URL given on the command line,
  i.e. a typed navigation (`Sec-Fetch-Site: none`, `Sec-Fetch-User: ?1`, no
  `Referer`), with an empty profile (no cookies).  A link click or a reload
  sends different `Sec-Fetch-*`/`Referer`/`Cache-Control` values.
* OkHttp is Debian's `libokhttp-java` 3.13.1 (OkHttp 4.x/5.x is not in
  Debian); it ran on OpenJDK 17 with `okio` 1.x from the same package set.
* The Python libraries ran in a venv made from the `python3` first on PATH
  when the install script ran (here pyenv's CPython, see the table); HTTPie is
  Debian's package on Debian's Python.
* HTTP/2 and HTTP/3 heads are not here: the capture server speaks plain
  HTTP/1.1 without TLS, so browsers use HTTP/1.1 (`--disable-quic` for
  Chromium).  Heads over TLS / h2 (pseudo-headers, HPACK order) differ.
* `java-httpclient` asks for an h2c upgrade (`Upgrade: h2c`,
  `HTTP2-Settings`) because its default version is HTTP/2; the server answers
  in HTTP/1.1 and the head is kept as sent.
* `ab` speaks HTTP/1.0.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated client names; keep the other files")
    ap.add_argument("--skip", help="comma-separated client names to skip")
    ap.add_argument("--list", action="store_true", help="list client names and exit")
    ap.add_argument("--port", type=int, default=PORT, help="port (default 18080)")
    args = ap.parse_args()

    browsers = browser_clients()
    tools = tool_clients()
    names = [b[0] for b in browsers] + [t[0] for t in tools]
    families = {b[0]: b[1] for b in browsers}
    families.update({t[0]: t[1] for t in tools})
    if args.list:
        for n in names:
            print(n, families[n], sep="\t")
        return 0
    only = set(args.only.split(",")) if args.only else None
    skip = set(args.skip.split(",")) if args.skip else set()
    for n in (only or set()) | skip:
        if n not in families:
            ap.error("unknown client %r (see --list)" % n)

    def wanted(n):
        return (only is None or n in only) and n not in skip

    if not ensure_hosts():
        return 1
    try:
        srv = serve(args.port)
    except OSError as e:
        log("cannot listen on 127.0.0.1:%d (%s); pass --port" % (args.port, e))
        return 1
    port = srv.getsockname()[1]
    log("capture server on 127.0.0.1:%d; work dir %s" % (port, WORK))

    os.makedirs(OUT, exist_ok=True)
    vpath = os.path.join(OUT, "versions.tsv")
    versions = {r[0]: r for r in read_tsv(vpath) if len(r) == 4}
    if only is None:
        for f in os.listdir(OUT):
            if f.endswith(".http"):
                os.remove(os.path.join(OUT, f))
        versions = {}
    else:
        for f in os.listdir(OUT):
            if f.endswith(".http") and f.split("__")[0] in only:
                os.remove(os.path.join(OUT, f))
    failures = []

    def done(client, family, version, status, events):
        versions[client] = [client, family, version, status]
        written = write_heads(client)
        log("  %-24s %s" % (client, version))
        for e in events:
            log("      " + e)
        log("      -> %s: %s" % (status, ", ".join(written) if written else "no files"))
        if status != "ok":
            failures.append((client, status))

    # browsers first (the slow ones)
    for client, family, binf, argv_for, ver in browsers:
        if not wanted(client):
            continue
        if not binf():
            done(client, family, "-", "missing (apt-get install %s)" %
                 ("chromium" if "chromium" in client else "firefox-esr"), [])
            continue
        if family == "browser" and not which("Xvfb"):
            done(client, family, ver(), "missing Xvfb (apt-get install xvfb)", [])
            continue
        version = ver()
        statuses = []
        events = []
        for origin in ("localhost", "plain"):
            CAP.start(client, family, origin)
            err = drive_browser(client, family, origin, port, argv_for)
            events += ["[%s] %s" % (origin, e) for e in CAP.stop()]
            if err:
                statuses.append("%s: %s" % (origin, err))
        done(client, family, version, "; ".join(statuses) or "ok", events)
    XVFB.stop()

    for client, family, need, ver, argv, extra_env, timeout in tools:
        if not wanted(client):
            continue
        miss = [n for n in need if not (which(n) or os.path.exists(n))]
        if miss:
            done(client, family, "-", "missing " + " ".join(miss) +
                 " (run scripts/capture_heads_install.sh)", [])
            continue
        version = ver()
        env = dict(os.environ)
        env.pop("http_proxy", None)
        env.pop("HTTP_PROXY", None)
        env["no_proxy"] = env["NO_PROXY"] = "localhost,127.0.0.1,shop.test"
        env.update(extra_env or {})
        statuses = []
        events = []
        kind = "document" if family == "text-browser" else "plain"
        for origin in ("localhost", "plain"):
            CAP.start(client, family, origin)
            rc, out = run(argv(url(origin, port)), timeout=timeout, env=env, cwd=WORK)
            CAP.wait_for(client, origin, [kind], timeout=2)
            events += ["[%s] %s" % (origin, e) for e in CAP.stop()]
            got = (client, kind, origin) in CAP.heads
            if not got:
                statuses.append("%s: no request (rc=%s) %s" % (origin, rc, first_line(out)[:200]))
            elif rc != 0:
                events.append("[%s] exit %s after the request: %s" % (origin, rc, first_line(out)[:200]))
        done(client, family, version, "; ".join(statuses) or "ok", events)

    with open(vpath, "w", encoding="utf-8", newline="\n") as f:
        for r in sorted(versions.values(), key=lambda r: (FAMILY_ORDER.get(r[1], 9), r[0])):
            f.write("\t".join(r) + "\n")
    rows = write_index(families)

    notes = []
    for client, family, version, status in sorted(versions.values()):
        if status != "ok":
            notes.append("* `%s` (%s): %s" % (client, family, status))
    if not notes:
        notes.append("* Every client the script knows was captured on this run (see `versions.tsv`).")
    notes_text = "\n".join(notes) + "\n" + STATIC_NOTES
    write_readme(list(versions.values()), rows, port, notes_text)
    srv.close()
    log("\n%d files in %s; %d stray requests ignored" % (len(rows), OUT, CAP.stray))
    if failures:
        log("failed or partial: " + "; ".join("%s (%s)" % f for f in failures))
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        rc = main()
    finally:
        XVFB.stop()
        shutil.rmtree(WORK, ignore_errors=True)
    sys.exit(rc)
