//! A headless Chromium driven through chromedriver's WebDriver HTTP API (W3C JSON over
//! HTTP/1.1, sent with the tests' own hyper client): the few commands the console tests use
//! (new session, navigate, run a script, screenshot, the browser log, one DevTools call), so
//! no WebDriver crate and its second HTTP stack are pulled in for them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::client::H1;
use super::full;

/// Where chromedriver and Chromium are, or why the browser tests cannot run. In CI
/// (`CI` set) a missing browser fails the test; locally it skips with a loud message.
pub fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|n| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(n))
                    .find(|p| p.is_file())
            })
        })
    };
    match (
        find(&["chromedriver"]),
        find(&["chromium", "chromium-browser", "google-chrome"]),
    ) {
        (Some(driver), Some(browser)) => Some((driver, browser)),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "{test}: chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
            )
        }
        _ => {
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED {test}: chromium or chromedriver is not installed\n\
                 !!! (apt-get install chromium chromium-driver); CI fails instead.\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            None
        }
    }
}

/// A running chromedriver, killed on drop.
pub struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wire(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to chromedriver at {addr}: {e}"));
    let mut h1 = H1::handshake(tcp).await.expect("chromedriver handshake");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(full(body))
        .expect("webdriver request");
    let resp = h1
        .call(req)
        .await
        .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    assert!(
        resp.status.is_success(),
        "webdriver {method} {path}: {} {v}",
        resp.status
    );
    v["value"].clone()
}

impl Driver {
    /// Start `driver` on a free loopback port and wait until it is ready.
    pub async fn start(driver: &std::path::Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let d = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(d.addr).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }

    /// A new headless browser (fresh profile), its browser log kept at every level.
    pub async fn session(&self, browser: &std::path::Path) -> Session {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100",
                         "--no-first-run", "--disable-extensions"],
            },
        }}});
        let v = wire(self.addr, "POST", "/session", Some(caps)).await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {v}"))
            .to_owned();
        Session {
            addr: self.addr,
            id,
        }
    }
}

/// One browser session.
pub struct Session {
    addr: SocketAddr,
    id: String,
}

impl Session {
    async fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        wire(
            self.addr,
            method,
            &format!("/session/{}/{what}", self.id),
            body,
        )
        .await
    }

    /// A DevTools protocol command (chromedriver's `goog/cdp/execute`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
        .await
    }

    /// Run `source` in every page before its own scripts (e.g. a listener to install first).
    pub async fn before_each_page(&self, source: &str) {
        self.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": source }),
        )
        .await;
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "url", Some(json!({ "url": url }))).await;
    }

    /// The value of `script` (a function body: `return ...`).
    pub async fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Poll `script` until it returns `true` (at most 15 s: health checks and a few of the
    /// console's updates); panics with `what` and the page's text otherwise.
    pub async fn wait_for(&self, what: &str, script: &str) {
        let limit = Duration::from_secs(15);
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.eval("return document.body.innerText").await;
                panic!("the console did not show {what} within {limit:?}; it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window, written to `target/console-screenshots/<name>.png`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot base64"))
            .expect("screenshot decodes");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        let dir = target.join("console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// The browser log since the last call: `(level, source, message)`.
    pub async fn log(&self) -> Vec<(String, String, String)> {
        let v = self
            .cmd("POST", "se/log", Some(json!({"type": "browser"})))
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                        (s("level"), s("source"), s("message"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn close(self) {
        let _ = wire(self.addr, "DELETE", &format!("/session/{}", self.id), None).await;
    }
}
