#!/usr/bin/env python3
# Cold console load (issue 21): a fresh gateway (`BIN demo`, whose admin listener is
# 127.0.0.1:9901 and serves /ui without credentials on loopback) and a fresh headless
# Chromium (chromedriver on port 9515) each run; Navigation Timing is read from the page.
# Prints, never asserts: a timing is a measurement, not a test.
#   python3 benches/console-cold-load.py target/release/portcullis 6
import json, os, signal, socket, subprocess, sys, time, urllib.request, shutil, tempfile
bin_, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5
def wire(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))
def wait_port(port, t=30):
    end = time.time() + t
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError: time.sleep(0.05)
    raise SystemExit(f"port {port} not up")
for i in range(runs):
    d = tempfile.mkdtemp()
    gw = subprocess.Popen([bin_, "demo"], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(9901)
    cd = subprocess.Popen(["chromedriver", "--port=9515"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(9515)
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"]}}}}
    sid = wire(9515, "POST", "/session", caps)["value"]["sessionId"]
    wire(9515, "POST", f"/session/{sid}/url", {"url": "http://127.0.0.1:9901/ui"})
    time.sleep(0.5)
    v = wire(9515, "POST", f"/session/{sid}/execute/sync", {"script": "const n = performance.getEntriesByType('navigation')[0].toJSON(); const m = performance.getEntriesByName('portcullis:first-data')[0]; return {n: n, first: m ? m.startTime : null}", "args": []})["value"]
    n = v["n"]
    print(f"run {i+1}: responseStart {n['responseStart']:.1f} ms, DOMContentLoaded {n['domContentLoadedEventEnd']:.1f} ms, load {n['loadEventEnd']:.1f} ms, first figures {v['first'] if v['first'] is None else round(v['first'],1)} ms", flush=True)
    wire(9515, "DELETE", f"/session/{sid}")
    cd.terminate(); cd.wait()
    os.killpg(gw.pid, signal.SIGTERM); gw.wait()
    shutil.rmtree(d, ignore_errors=True)
    time.sleep(0.5)
