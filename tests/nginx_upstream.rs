//! Proves the bypasses are closed against a real normalising upstream: nginx (Debian's,
//! started here on a free loopback port; `.ci/run` installs it) serves `/admin` and the virtual
//! host `secure.example.com` behind the gateway's protected routes, and an open catch-all
//! route goes to the same nginx. nginx decodes escapes, merges slashes and strips the root
//! dot from Host before it picks a location or server: no spelling of `/admin` or of the
//! secure host gets nginx's admin or secure answer through the open route.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::raw::raw_tls;
use support::*;

const NGINX: &str = "/usr/sbin/nginx";

struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx in the foreground, one process, everything under a temp dir; `None` when nginx is
/// not installed outside CI (CI installs it, so there a missing nginx fails the test).
fn start_nginx() -> Option<Nginx> {
    if !Path::new(NGINX).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{NGINX} is missing: .ci/run installs Debian's nginx for this test"
        );
        eprintln!("skipped: {NGINX} is not installed (apt-get install nginx)");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n\
         access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         server {{ listen 127.0.0.1:{port} default_server; server_name _;\n\
           location /admin {{ return 200 \"admin:$uri\\n\"; }}\n\
           location / {{ return 200 \"open:$uri\\n\"; }} }}\n\
         server {{ listen 127.0.0.1:{port}; server_name secure.example.com;\n\
           location / {{ return 200 \"secure:$uri\\n\"; }} }}\n}}\n"
    );
    let conf_path: PathBuf = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Nginx {
        child,
        port,
        _dir: dir,
    })
}

/// Everything the gateway may answer: refused (4xx JSON; 421 for a host the listener does not
/// serve), or nginx's open location.
fn assert_never_protected(what: &str, status: u16, body: &str) {
    assert!(
        !body.starts_with("admin:") && !body.starts_with("secure:"),
        "{what}: nginx served its protected answer through the gateway: {status} {body}"
    );
    assert!(
        matches!(status, 200 | 400 | 403 | 421),
        "{what}: unexpected {status} {body}"
    );
    if status == 200 {
        assert!(body.starts_with("open:"), "{what}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_admin_or_the_secure_host_reaches_nginxs_protected_answers() {
    let Some(nginx) = start_nginx() else {
        return;
    };
    let pki = Pki::generate();
    let url = format!("http://127.0.0.1:{}", nginx.port);
    let deny = "deny = [\"127.0.0.0/8\", \"::1/128\"]";
    let toml = format!(
        "{}{}{}{}",
        listener("public", ""),
        route("admin", "/admin", &[&url], deny),
        route(
            "secure",
            "/",
            &[&url],
            &format!("host = \"secure.example.com\"\n{deny}")
        ),
        route("open", "/", &[&url], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    // The setup works: nginx's open location answers through the open route.
    let mut conn = raw_tls(&pki, gw.addr()).await;
    conn.send(b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let resp = conn.response(Duration::from_secs(10)).await.response();
    assert_eq!((resp.status, resp.text()), (200, "open:/x\n".to_owned()));

    let paths = [
        "/admin",
        "/%61dmin",
        "//admin",
        "/adm%69n/users",
        "/admin;x",
        "/x/..;/admin",
        "/x/%2e%2e/admin",
        "/ADMIN",
        "/%2561dmin",
        "/admin%2f",
        "/x/%2E%2E%2Fadmin",
        "/.//admin",
        "/admin%3bx",
        "/%2fadmin",
        "/x%5c..%5cadmin",
    ];
    let mut requests: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            (
                p.to_string(),
                format!("GET {p} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
            )
        })
        .collect();
    for host in [
        "secure.example.com",
        "secure.example.com.",
        "SECURE.example.com.:443",
        "secure.example.com..",
        "secure.example.com%2e",
        "x@secure.example.com",
    ] {
        requests.push((
            format!("Host: {host}"),
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        ));
    }
    requests.push((
        "absolute-form".into(),
        "GET http://secure.example.com./ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            .into(),
    ));
    for (what, head) in &requests {
        let mut conn = raw_tls(&pki, gw.addr()).await;
        conn.send(head.as_bytes()).await.expect("send");
        let resp = conn.response(Duration::from_secs(10)).await.response();
        assert_never_protected(what, resp.status, &resp.text());
    }

    // HTTP/2, where the host is :authority.
    let mut h2 = connect_h2(&pki, gw.addr()).await;
    for (authority, path) in [
        ("localhost", "/%61dmin"),
        ("localhost", "//admin"),
        ("localhost", "/ADMIN"),
        ("secure.example.com.", "/"),
        ("Secure.Example.com", "/"),
    ] {
        let Ok(req) = h2_request("GET", authority, path).body(empty()) else {
            continue;
        };
        let resp = h2.call(req).await.expect("h2");
        assert_never_protected(
            &format!("h2 {authority}{path}"),
            resp.status.as_u16(),
            &resp.text(),
        );
    }
}
