//! A real `redis-server` for the fleet tests: started on a free 127.0.0.1 port with no
//! persistence, stopped (killed) when dropped, and restartable on the same port so a test
//! can take Redis away and bring it back under a running gateway.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    port: u16,
    /// Serves TLS only (on `port`).
    tls: bool,
    args: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A server with no password (the default user open).
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server with extra `redis-server` arguments: a directive and its words each an
    /// argument, e.g. `["--user", "gw", "on", ">pw", "~*", "+@all"]`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            port,
            tls: false,
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.launch();
        server
    }

    /// A server speaking only TLS, with the certificate and key files given (PEM), not
    /// asking for client certificates. Its URL is `rediss://localhost:PORT`.
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> RedisServer {
        let port = free_port();
        let path = |p: &std::path::Path| p.display().to_string();
        let mut server = RedisServer {
            port,
            tls: true,
            args: vec![
                "--tls-cert-file".into(),
                path(cert),
                "--tls-key-file".into(),
                path(key),
                "--tls-ca-cert-file".into(),
                path(ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.launch();
        server
    }

    pub fn tls_url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server now (no shutdown courtesy: what a crash or a cut cable looks like).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Run one command with `redis-cli`-free plain RESP and return the raw reply.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        let port = self.port.to_string();
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port]);
        } else {
            cmd.args(["--port", &port]);
        }
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}): install it (apt-get install redis-server)")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                if self.tls {
                    return;
                }
                // Any reply (PONG, or NOAUTH when a password is set) means it serves.
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok() {
                    let mut b = [0u8; 64];
                    if matches!(s.read(&mut b), Ok(n) if n > 0) {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A Redis Cluster of real servers on loopback (no replicas), its slots spread over them.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(n: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): install redis-tools"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            while !node
                .command(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                assert!(Instant::now() < deadline, "the cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// The first node: a seed from which a client learns the others.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// The keys on every node matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.command(&["KEYS", pattern])
                    .lines()
                    .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
