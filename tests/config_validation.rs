//! Proves that every config problem is reported with the file, the key path and what is
//! wrong, that all problems are reported at once, and that certificate problems name the
//! file and the reason. Certificates are generated here (rcgen); expiry is judged against
//! an injected `now`, so nothing sleeps.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use portcullis::config::{ConfigErrors, load_str};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, date_time_ymd};

/// Certificates valid from 2030-01-01 to 2031-01-01; tests judge them at [`in_2030`].
struct Files {
    dir: tempfile::TempDir,
}

fn in_2030() -> SystemTime {
    // 2030-06-01
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_906_502_400)
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.not_before = date_time_ymd(2030, 1, 1);
        ca.not_after = date_time_ymd(2031, 1, 1);
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca, &ca_key);

        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        p.not_before = date_time_ymd(2030, 1, 1);
        p.not_after = date_time_ymd(2031, 1, 1);
        let cert = p.signed_by(&key, &issuer).expect("cert");
        let other_key = KeyPair::generate().expect("other key");

        let f = Files { dir };
        f.write("server.pem", &cert.pem());
        f.write("server.key", &key.serialize_pem());
        f.write("other.key", &other_key.serialize_pem());
        f.write("ca.pem", &ca_cert.pem());
        f.write("garbage.pem", "this is not PEM at all\n");
        f.write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        );
        f
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).expect("write");
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("portcullis.toml")
    }

    fn load(
        &self,
        text: &str,
        now: SystemTime,
    ) -> Result<portcullis::config::Loaded, ConfigErrors> {
        load_str(&self.config_path(), text, now)
    }
}

const VALID: &str = r#"
[server]
max_connections = 100
header_read_timeout = "5s"

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
[[listeners.certificates]]
chain = "server.pem"
key = "server.key"

[[listeners]]
name = "mtls"
bind = "127.0.0.1:0"
client_auth = "required"
client_ca = "ca.pem"
[[listeners.certificates]]
chain = "server.pem"
key = "server.key"

[[routes]]
name = "orders"
path_prefix = "/orders"
methods = ["GET", "POST"]
upstream = ["http://127.0.0.1:9000", "http://backend.internal:8080"]
max_body_bytes = 1024
connect_timeout = "2s"

[[routes]]
name = "root"
upstream = ["http://127.0.0.1:9001"]
listeners = ["public"]
"#;

/// Replace the first occurrence of `from` in the valid config.
fn mutate(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "test bug: {from:?} not in VALID");
    VALID.replacen(from, to, 1)
}

fn assert_error(files: &Files, text: &str, key: &str, needle: &str) {
    let err = match files.load(text, in_2030()) {
        Ok(_) => panic!("expected an error at {key} containing {needle:?}, got a valid config"),
        Err(e) => e,
    };
    let found = err
        .0
        .iter()
        .any(|i| i.key == key && i.message.contains(needle));
    assert!(
        found,
        "expected an error at {key} containing {needle:?}; got:\n{err}"
    );
    // The rendered line names the file too.
    let rendered = err.to_string();
    assert!(rendered.contains(&files.config_path().display().to_string()));
    assert!(rendered.contains(key));
}

#[test]
fn the_valid_example_loads_without_warnings() {
    let files = Files::new();
    let loaded = files.load(VALID, in_2030()).expect("valid config");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.snapshot.listeners.len(), 2);
    // Two routes ("orders" on both listeners, "root" on "public" only), counted once each.
    assert_eq!(loaded.snapshot.route_count(), 2);
    assert_eq!(loaded.snapshot.server.max_connections, 100);
    assert_eq!(
        loaded.snapshot.server.header_read_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(
        loaded.snapshot.server.release_idle_after,
        Duration::from_millis(250),
        "release_idle_after's default"
    );
}

#[test]
fn each_bad_value_is_reported_at_its_key_path() {
    let files = Files::new();
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace this, with this, key path, message contains)
        (
            "max_connections = 100",
            "max_connections = 0",
            "server.max_connections",
            "out of range",
        ),
        (
            "max_connections = 100",
            "max_connections = 100\nmax_header_bytes = 100",
            "server.max_header_bytes",
            "8192",
        ),
        (
            "header_read_timeout = \"5s\"",
            "header_read_timeout = \"five\"",
            "server.header_read_timeout",
            "not a duration",
        ),
        (
            "header_read_timeout = \"5s\"",
            "header_read_timeout = \"0s\"",
            "server.header_read_timeout",
            "longer than zero",
        ),
        (
            "header_read_timeout = \"5s\"",
            "header_read_timeout = \"5s\"\nrelease_idle_after = \"0s\"",
            "server.release_idle_after",
            "longer than zero",
        ),
        (
            "header_read_timeout = \"5s\"",
            "header_read_timeout = \"5s\"\nrelease_idle_after = \"soon\"",
            "server.release_idle_after",
            "not a duration",
        ),
        (
            "max_connections = 100",
            "max_connections = 100\nshutdown_timeout = \"3d\"",
            "server.shutdown_timeout",
            "longer than a day",
        ),
        (
            "name = \"public\"",
            "name = \"pub lic\"",
            "listeners[0].name",
            "must be 1-64 characters",
        ),
        (
            "name = \"mtls\"",
            "name = \"public\"",
            "listeners[1].name",
            "used twice",
        ),
        (
            "bind = \"127.0.0.1:0\"",
            "bind = \"localhost:8443\"",
            "listeners[0].bind",
            "not an IP:port",
        ),
        (
            "name = \"public\"\nbind = \"127.0.0.1:0\"",
            "name = \"public\"\nbind = \"127.0.0.1:0\"\nmin_tls = \"1.1\"",
            "listeners[0].min_tls",
            "TLS 1.1 is not supported",
        ),
        (
            "name = \"public\"\nbind = \"127.0.0.1:0\"",
            "name = \"public\"\nbind = \"127.0.0.1:0\"\nmin_tls = \"2\"",
            "listeners[0].min_tls",
            "not a TLS version",
        ),
        (
            "client_auth = \"required\"",
            "client_auth = \"sometimes\"",
            "listeners[1].client_auth",
            "not a client auth mode",
        ),
        (
            "client_ca = \"ca.pem\"",
            "",
            "listeners[1].client_ca",
            "needs a CA bundle",
        ),
        (
            "client_ca = \"ca.pem\"",
            "client_ca = \"missing.pem\"",
            "listeners[1].client_ca",
            "cannot read",
        ),
        (
            "client_ca = \"ca.pem\"",
            "client_ca = \"garbage.pem\"",
            "listeners[1].client_ca",
            "is not PEM",
        ),
        (
            "chain = \"server.pem\"",
            "chain = \"nope.pem\"",
            "listeners[0].certificates[0].chain",
            "cannot read",
        ),
        (
            "chain = \"server.pem\"",
            "chain = \"garbage.pem\"",
            "listeners[0].certificates[0].chain",
            "is not PEM",
        ),
        (
            "chain = \"server.pem\"",
            "chain = \"broken.pem\"",
            "listeners[0].certificates[0].chain",
            "malformed PEM",
        ),
        (
            "chain = \"server.pem\"",
            "chain = \"server.key\"",
            "listeners[0].certificates[0].chain",
            "is not PEM",
        ),
        (
            "key = \"server.key\"",
            "key = \"server.pem\"",
            "listeners[0].certificates[0].key",
            "is not PEM",
        ),
        (
            "key = \"server.key\"",
            "key = \"other.key\"",
            "listeners[0].certificates[0].key",
            "does not match the certificate",
        ),
        (
            "chain = \"server.pem\"\nkey = \"server.key\"",
            "key = \"server.key\"",
            "listeners[0].certificates[0].chain",
            "missing",
        ),
        (
            "chain = \"server.pem\"\nkey = \"server.key\"",
            "chain = \"server.pem\"",
            "listeners[0].certificates[0].key",
            "missing",
        ),
        (
            "name = \"orders\"",
            "name = \"orders!\"",
            "routes[0].name",
            "must be 1-64 characters",
        ),
        (
            "name = \"orders\"",
            "name = \"root\"",
            "routes[1].name",
            "used twice",
        ),
        (
            "path_prefix = \"/orders\"",
            "path_prefix = \"orders\"",
            "routes[0].path_prefix",
            "must start with '/'",
        ),
        (
            "path_prefix = \"/orders\"",
            "path_prefix = \"/orders/../admin\"",
            "routes[0].path_prefix",
            "\"..\" segments",
        ),
        (
            "path_prefix = \"/orders\"",
            "path_prefix = \"/orders?x=1\"",
            "routes[0].path_prefix",
            "without '?'",
        ),
        (
            "path_prefix = \"/orders\"",
            "path_prefix = \"/orders\"\nhost = \"https://api.example.com\"",
            "routes[0].host",
            "not a host name",
        ),
        (
            "methods = [\"GET\", \"POST\"]",
            "methods = [\"GET\", \"post\"]",
            "routes[0].methods[1]",
            "write \"POST\"",
        ),
        (
            "methods = [\"GET\", \"POST\"]",
            "methods = []",
            "routes[0].methods",
            "empty",
        ),
        (
            "upstream = [\"http://127.0.0.1:9000\", \"http://backend.internal:8080\"]",
            "upstream = [\"http://127.0.0.1:9000\", \"htp://x\"]",
            "routes[0].upstream[1]",
            "\"htp://x\" is not an http(s) URL",
        ),
        (
            "upstream = [\"http://127.0.0.1:9000\", \"http://backend.internal:8080\"]",
            "upstream = [\"https://127.0.0.1:9000\", \"http://backend.internal:8080\"]",
            "routes[0].upstream",
            "mixes http:// and https://",
        ),
        (
            "upstream = [\"http://127.0.0.1:9000\", \"http://backend.internal:8080\"]",
            "upstream = [\"http://127.0.0.1:9000/api\"]",
            "routes[0].upstream[0]",
            "must not have a path",
        ),
        (
            "upstream = [\"http://127.0.0.1:9000\", \"http://backend.internal:8080\"]",
            "upstream = [\"http://admin:pw@127.0.0.1:9000\"]",
            "routes[0].upstream[0]",
            "credentials",
        ),
        (
            "upstream = [\"http://127.0.0.1:9000\", \"http://backend.internal:8080\"]",
            "upstream = []",
            "routes[0].upstream",
            "missing",
        ),
        (
            "max_body_bytes = 1024",
            "max_body_bytes = 0",
            "routes[0].max_body_bytes",
            "would refuse every body",
        ),
        (
            "connect_timeout = \"2s\"",
            "connect_timeout = \"2 parsecs\"",
            "routes[0].connect_timeout",
            "not a duration",
        ),
        (
            "listeners = [\"public\"]",
            "listeners = [\"public\", \"admin\"]",
            "routes[1].listeners[1]",
            "no listener is named \"admin\"",
        ),
        (
            "listeners = [\"public\"]",
            "listeners = []",
            "routes[1].listeners",
            "empty",
        ),
        (
            "name = \"root\"",
            "name = \"root\"\npath_prefix = \"/orders/\"",
            "routes[1]",
            "same host and path_prefix as route \"orders\"",
        ),
        (
            "name = \"public\"\nbind = \"127.0.0.1:0\"",
            "name = \"public\"\nbind = \"127.0.0.1:0\"\npins = [\"sha256/AAAA\"]",
            "listeners[0].pins[0]",
            "is not an SPKI pin",
        ),
        (
            "name = \"public\"\nbind = \"127.0.0.1:0\"",
            "name = \"public\"\nbind = \"127.0.0.1:0\"\ncert_fingerprints = [\"AB:CD\"]",
            "listeners[0].cert_fingerprints[0]",
            "is not a SHA-256 certificate fingerprint",
        ),
        (
            "name = \"public\"\nbind = \"127.0.0.1:0\"",
            "name = \"public\"\nbind = \"127.0.0.1:0\"\nallow = []",
            "listeners[0].allow",
            "would admit everyone",
        ),
        (
            "name = \"public\"\nbind = \"127.0.0.1:0\"",
            "name = \"public\"\nbind = \"127.0.0.1:0\"\nallow = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
            "listeners[0].allow[1]",
            "is not an IP network",
        ),
        (
            "name = \"public\"\nbind = \"127.0.0.1:0\"",
            "name = \"public\"\nbind = \"127.0.0.1:0\"\ndeny = [\"example.com\"]",
            "listeners[0].deny[0]",
            "is not an IP network",
        ),
        (
            "name = \"public\"\nbind = \"127.0.0.1:0\"",
            "name = \"public\"\nbind = \"127.0.0.1:0\"\ntrusted_proxies = [\"10.0.0.0/8\", \"lb\"]",
            "listeners[0].trusted_proxies[1]",
            "is not an IP network",
        ),
        (
            "name = \"public\"\nbind = \"127.0.0.1:0\"",
            "name = \"public\"\nbind = \"127.0.0.1:0\"\nproxy_protocol = true",
            "listeners[0].proxy_protocol",
            "needs trusted_proxies",
        ),
        (
            "client_auth = \"required\"\nclient_ca = \"ca.pem\"",
            "client_auth = \"pinned\"",
            "listeners[1].pins",
            "needs pins or cert_fingerprints",
        ),
        (
            "name = \"root\"",
            "name = \"root\"\npins = [\"sha1/abc\"]",
            "routes[1].pins[0]",
            "is not an SPKI pin",
        ),
        (
            "name = \"root\"",
            "name = \"root\"\nallow = [\"300.0.0.1\"]",
            "routes[1].allow[0]",
            "is not an IP network",
        ),
        (
            "name = \"root\"",
            "name = \"root\"\nallow = []",
            "routes[1].allow",
            "would admit everyone",
        ),
        (
            "[server]",
            "[identity_headers]\nsubject = \"Host\"\n\n[server]",
            "identity_headers.subject",
            "manages itself",
        ),
        (
            "[server]",
            "[identity_headers]\nspki = \"bad header\"\n\n[server]",
            "identity_headers.spki",
            "not a valid header name",
        ),
        (
            "[server]",
            "[identity_headers]\nspki = \"X-A\"\nserial = \"x-a\"\n\n[server]",
            "identity_headers.serial",
            "is already the header of identity_headers.spki",
        ),
    ];
    for (from, to, key, needle) in cases {
        assert_error(&files, &mutate(from, to), key, needle);
    }
}

#[test]
fn type_errors_and_unknown_keys_name_the_key_path_and_line() {
    let files = Files::new();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "max_connections = 100",
            "max_connections = \"many\"",
            "server.max_connections",
            "invalid type",
        ),
        (
            "max_connections = 100",
            "max_conections = 100",
            "server.max_conections",
            "unknown field `max_conections`",
        ),
        (
            "max_body_bytes = 1024",
            "max_body_byte = 1024",
            "routes[0].max_body_byte",
            "unknown field `max_body_byte`",
        ),
    ];
    for (from, to, key, needle) in cases {
        assert_error(&files, &mutate(from, to), key, needle);
        let err = files
            .load(&mutate(from, to), in_2030())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("(line "), "no line number in: {err}");
    }
}

#[test]
fn a_url_where_an_upstream_name_belongs_says_to_write_a_list() {
    let files = Files::new();
    assert_error(
        &files,
        &mutate(
            "upstream = [\"http://127.0.0.1:9001\"]",
            "upstream = \"http://127.0.0.1:9001\"",
        ),
        "routes[1].upstream",
        "is a URL: a route's own targets are a list",
    );
}

#[test]
fn a_file_that_is_not_toml_says_so_with_the_line() {
    let files = Files::new();
    let err = files
        .load("[server\nmax_connections = 1", in_2030())
        .err()
        .expect("error");
    assert_eq!(err.0.len(), 1);
    assert!(err.0[0].message.contains("not valid TOML"), "{err}");
    assert!(err.0[0].message.contains("line 1"), "{err}");
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let files = Files::new();
    let text = VALID
        .replacen("bind = \"127.0.0.1:0\"", "bind = \"nowhere\"", 1)
        .replacen("methods = [\"GET\", \"POST\"]", "methods = [\"get\"]", 1)
        .replacen("connect_timeout = \"2s\"", "connect_timeout = \"soon\"", 1)
        .replacen("key = \"server.key\"", "key = \"other.key\"", 1);
    let err = files.load(&text, in_2030()).err().expect("errors");
    let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
    for k in [
        "listeners[0].bind",
        "listeners[0].certificates[0].key",
        "routes[0].methods[0]",
        "routes[0].connect_timeout",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    assert_eq!(err.to_string().lines().count(), err.0.len());
}

#[test]
fn a_config_without_listeners_is_refused() {
    let files = Files::new();
    let err = files
        .load(
            "[[routes]]\nname = \"a\"\nupstream = [\"http://127.0.0.1:1\"]\n",
            in_2030(),
        )
        .err()
        .expect("error");
    assert!(
        err.0
            .iter()
            .any(|i| i.key == "listeners" && i.message.contains("at least one")),
        "{err}"
    );
}

#[test]
fn an_expired_certificate_is_an_error_naming_the_file_and_date() {
    let files = Files::new();
    let in_2032 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_956_528_000);
    let err = files.load(VALID, in_2032).err().expect("expired");
    let issue = err
        .0
        .iter()
        .find(|i| i.key == "listeners[0].certificates[0].chain")
        .expect("chain error");
    assert!(issue.message.contains("server.pem"), "{issue}");
    assert!(issue.message.contains("expired on 2031-01-01"), "{issue}");
}

#[test]
fn a_certificate_not_yet_valid_is_an_error() {
    let files = Files::new();
    let in_2029 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_861_920_000);
    let err = files.load(VALID, in_2029).err().expect("not yet valid");
    assert!(
        err.0
            .iter()
            .any(|i| i.message.contains("not valid before 2030-01-01")),
        "{err}"
    );
}

#[test]
fn a_certificate_expiring_within_14_days_loads_with_a_warning() {
    let files = Files::new();
    // 2030-12-25: seven days before the certificate's end.
    let late_2030 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_924_387_200);
    let loaded = files.load(VALID, late_2030).expect("still valid");
    let w = loaded
        .warnings
        .iter()
        .find(|w| w.key == "listeners[0].certificates[0].chain")
        .expect("expiry warning");
    assert!(w.message.contains("expires soon, on 2031-01-01"), "{w}");
}

#[test]
fn identity_and_ip_keys_load_into_the_snapshot() {
    let files = Files::new();
    let pin = format!("sha256/{}=", "A".repeat(43));
    let text = mutate(
        "name = \"public\"\nbind = \"127.0.0.1:0\"",
        &format!(
            "name = \"public\"\nbind = \"127.0.0.1:0\"\npins = [\"{pin}\"]\nallow = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\ndeny = [\"10.1.0.0/16\"]\ntrusted_proxies = [\"127.0.0.1\"]\nproxy_protocol = true"
        ),
    );
    let loaded = files.load(&text, in_2030()).expect("valid");
    let l = &loaded.snapshot.listeners[0];
    assert!(!l.pins.is_empty());
    assert!(l.proxy_protocol);
    assert!(l.ip.lists.admits("10.2.3.4".parse().expect("ip")));
    assert!(
        !l.ip.lists.admits("10.1.2.3".parse().expect("ip")),
        "deny wins over allow"
    );
    assert!(l.ip.lists.admits("192.0.2.7".parse().expect("ip")));
    assert!(!l.ip.lists.admits("192.0.2.8".parse().expect("ip")));
    assert!(
        l.ip.trusted_proxies
            .contains("127.0.0.1".parse().expect("ip"))
    );
}

#[test]
fn client_ca_without_client_auth_is_a_warning_not_silence() {
    let files = Files::new();
    let text = mutate(
        "name = \"public\"\nbind = \"127.0.0.1:0\"",
        "name = \"public\"\nbind = \"127.0.0.1:0\"\nclient_ca = \"ca.pem\"",
    );
    let loaded = files.load(&text, in_2030()).expect("valid");
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.key == "listeners[0].client_ca" && w.message.contains("ignored"))
    );
}

#[test]
fn an_unreadable_config_file_is_reported_with_its_path() {
    let missing = Path::new("/nonexistent/portcullis.toml");
    let err = portcullis::config::load_file(missing, in_2030())
        .err()
        .expect("error");
    assert!(
        err.to_string()
            .starts_with("/nonexistent/portcullis.toml: cannot read config file"),
        "{err}"
    );
}

#[test]
fn the_documented_example_config_uses_only_known_keys_and_valid_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.example.toml");
    let text = std::fs::read_to_string(&path).expect("example config");
    portcullis::config::parse_file_config(&path, &text).expect("every key is known");
    // Its certificate files are the operator's to provide: those are the only problems.
    let err = load_str(&path, &text, in_2030())
        .err()
        .expect("certificates are absent");
    // Only what an operator supplies and this machine does not have: files to read and the
    // folders of the stores.
    for issue in &err.0 {
        assert!(
            issue.message.contains("cannot read") || issue.message.contains("does not exist"),
            "unexpected problem in the example: {issue}"
        );
    }
}

#[test]
fn each_bad_policy_bypass_setting_is_reported_at_its_key_path() {
    let files = Files::new();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "max_connections = 100",
            "max_connections = 100\nunderscores_in_headers = \"sometimes\"",
            "server.underscores_in_headers",
            "\"drop\", \"refuse\", \"allow\"",
        ),
        (
            "name = \"public\"",
            "name = \"public\"\ntrusted_proxies = [\"10.0.0.0/8\"]\nforwarded_header = \"x-real-ip\"",
            "listeners[0].forwarded_header",
            "\"x-forwarded-for\", \"forwarded\"",
        ),
        (
            "path_prefix = \"/orders\"",
            "path_prefix = \"/orders;v=1\"",
            "routes[0].path_prefix",
            "';'",
        ),
        (
            "path_prefix = \"/orders\"",
            "path_prefix = \"/orders%2fx\"",
            "routes[0].path_prefix",
            "encoded '/'",
        ),
        (
            "path_prefix = \"/orders\"",
            "path_prefix = \"/orders\"\nhost = \"shop..example.com\"",
            "routes[0].host",
            "not a host name",
        ),
    ];
    for (from, to, key, needle) in cases {
        assert_error(&files, &mutate(from, to), key, needle);
    }
    let admin = format!("{VALID}\n[admin]\nbind = \"127.0.0.1:0\"\nhosts = [\"admin:9901\"]\n");
    assert_error(&files, &admin, "admin.hosts[0]", "no port");
}

#[test]
fn route_prefixes_and_hosts_are_stored_in_canonical_form() {
    let files = Files::new();
    let text = mutate(
        "path_prefix = \"/orders\"",
        "path_prefix = \"/%6Frders/\"\nhost = \"Shop.Example.COM.\"\ncase_insensitive = true",
    );
    let loaded = files.load(&text, in_2030()).expect("valid config");
    let route = loaded.snapshot.listeners[0]
        .routes
        .iter()
        .find(|r| &*r.name == "orders")
        .expect("orders");
    assert_eq!(&*route.path_prefix, "/orders");
    assert_eq!(route.host.as_deref(), Some("shop.example.com"));
    assert!(route.case_insensitive);
    assert!(!route.path_params);
}

/// Runs `openssl ARGS` (space-separated) in `dir`: test-time certificates of kinds rcgen
/// cannot make (SHA-1 signatures, 1024-bit RSA, P-192, X.509 v1).
fn openssl(dir: &Path, args: &str) {
    let out = std::process::Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_refuses_weak_server_certificates_naming_the_file_and_subject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Extensions make the leaves X.509 v3, as every usable server certificate is.
    std::fs::write(d.join("v3.ext"), "subjectAltName=DNS:weak.example\n").expect("ext");
    openssl(
        d,
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -subj /CN=testca -sha256 -days 30",
    );
    // A leaf `name` with a new key from `newkey`, signed by the CA with `hash`; `ext`: v3.
    let leaf = |name: &str, newkey: &str, hash: &str, ext: bool| {
        openssl(
            d,
            &format!(
                "req {newkey} -keyout {name}.key -out {name}.csr -subj /CN=weak.example -nodes"
            ),
        );
        let ext = if ext { "-extfile v3.ext" } else { "" };
        openssl(
            d,
            &format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial {ext} -out {name}.pem {hash} -days 30"
            ),
        );
    };
    leaf("sha1", "-newkey rsa:2048", "-sha1", true);
    leaf("rsa1024", "-newkey rsa:1024", "-sha256", true);
    openssl(d, "ecparam -name prime192v1 -genkey -noout -out p192.key");
    leaf("p192", "-new -key p192.key", "-sha256", true);
    leaf("good", "-newkey rsa:2048", "-sha256", true);
    leaf("v1", "-newkey rsa:2048", "-sha256", false);

    let path = d.join("portcullis.toml");
    let config = |name: &str| {
        format!(
            "[[listeners]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n[[listeners.certificates]]\nchain = \"{name}.pem\"\nkey = \"{name}.key\"\n\n\
             [[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = [\"http://127.0.0.1:9\"]\n"
        )
    };
    for (name, needle) in [
        ("sha1", "signed with SHA-1"),
        ("rsa1024", "1024-bit RSA key"),
        ("p192", "192-bit EC key"),
    ] {
        let err = match load_str(&path, &config(name), SystemTime::now()) {
            Ok(_) => panic!("{name}.pem was accepted"),
            Err(e) => e,
        };
        let found = err.0.iter().any(|i| {
            i.key == "listeners[0].certificates[0].chain"
                && i.message.contains(needle)
                && i.message.contains(&format!("{name}.pem"))
                && i.message.contains("weak.example")
        });
        assert!(found, "{name}: {err}");
    }
    load_str(&path, &config("good"), SystemTime::now()).expect("a SHA-256, RSA-2048 chain loads");
    // An X.509 v1 certificate (no extensions) is named as such, not as a key mismatch.
    let err = load_str(&path, &config("v1"), SystemTime::now())
        .err()
        .expect("v1 refused");
    assert!(
        err.0.iter().any(
            |i| i.key == "listeners[0].certificates[0].chain" && i.message.contains("X.509 v3")
        ),
        "{err}"
    );
}

#[test]
fn a_key_of_the_wrong_type_or_name_does_not_hide_the_other_problems() {
    let files = Files::new();
    // Two TOML-level mistakes and two validation problems in one file.
    let text = mutate("max_connections = 100", "max_connections = \"many\"")
        .replacen("max_body_bytes = 1024", "max_body_byte = 1024", 1)
        .replacen(
            "header_read_timeout = \"5s\"",
            "header_read_timeout = \"soon\"",
            1,
        )
        .replacen("http://backend.internal:8080", "htp://backend", 1);
    let err = files.load(&text, in_2030()).err().expect("refused");
    for (key, needle) in [
        ("server.max_connections", "invalid type"),
        ("routes[0].max_body_byte", "unknown field"),
        ("server.header_read_timeout", "soon"),
        ("routes[0].upstream[1]", "htp://backend"),
    ] {
        assert!(
            err.0
                .iter()
                .any(|i| i.key == key && i.message.contains(needle)),
            "expected {key} ({needle}) among:\n{err}"
        );
    }
    // The key cut out for its type is not reported again as missing.
    assert_eq!(
        err.0
            .iter()
            .filter(|i| i.key.starts_with("server.max_connections"))
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn admin_identities_are_validated_entry_by_entry() {
    let files = Files::new();
    files.write("ops.token", &"o".repeat(40));
    files.write("short.token", "too-short");
    let admin = |extra: &str| {
        format!(
            "{VALID}\n[admin]\nbind = \"127.0.0.1:0\"\n\
             [[admin.certificates]]\nchain = \"server.pem\"\nkey = \"server.key\"\n{extra}"
        )
    };
    let ident = |body: &str| admin(&format!("[[admin.identities]]\n{body}\n"));
    let cases = [
        (
            ident("name = \"ops\"\nrole = \"root\"\ntoken_file = \"ops.token\""),
            "admin.identities[0].role",
            "\"root\" is not a role",
        ),
        (
            ident("name = \"ops\"\ntoken_file = \"ops.token\""),
            "admin.identities[0].role",
            "missing",
        ),
        (
            ident("role = \"viewer\"\ntoken_file = \"ops.token\""),
            "admin.identities[0].name",
            "missing",
        ),
        (
            ident("name = \"ops\"\nrole = \"viewer\""),
            "admin.identities[0]",
            "exactly one of token_file, pins or subject",
        ),
        (
            ident(
                "name = \"ops\"\nrole = \"viewer\"\ntoken_file = \"ops.token\"\nsubject = \"CN=x\"",
            ),
            "admin.identities[0]",
            "exactly one",
        ),
        (
            ident("name = \"ops\"\nrole = \"viewer\"\ntoken_file = \"short.token\""),
            "admin.identities[0].token_file",
            "shorter than 32",
        ),
        (
            ident("name = \"ops\"\nrole = \"viewer\"\npins = [\"sha256/nope\"]"),
            "admin.identities[0].pins[0]",
            "",
        ),
        (
            ident("name = \"ops\"\nrole = \"viewer\"\nsubject = \"CN=ops\""),
            "admin.identities[0].subject",
            "needs client_ca",
        ),
        (
            admin(
                "[[admin.identities]]\nname = \"a\"\nrole = \"viewer\"\ntoken_file = \"ops.token\"\n\
                 [[admin.identities]]\nname = \"b\"\nrole = \"admin\"\ntoken_file = \"ops.token\"\n",
            ),
            "admin.identities[1]",
            "same name or token",
        ),
    ];
    for (text, key, needle) in &cases {
        assert_error(&files, text, key, needle);
    }
    // Pins on a plain-HTTP admin listener cannot be checked.
    let plain = format!(
        "{VALID}\n[admin]\nbind = \"127.0.0.1:0\"\n[[admin.identities]]\nname = \"a\"\nrole = \"viewer\"\npins = [\"sha256/{}\"]\n",
        "A".repeat(43) + "="
    );
    assert_error(&files, &plain, "admin.identities[0].pins", "need TLS");
    // A public bind with identities by token is authenticated.
    let public = format!(
        "{VALID}\n[admin]\nbind = \"0.0.0.0:0\"\n[[admin.identities]]\nname = \"a\"\nrole = \"viewer\"\ntoken_file = \"ops.token\"\n"
    );
    files
        .load(&public, in_2030())
        .expect("token identities authenticate a public bind");
}

#[test]
fn bad_tracing_values_are_refused_with_the_key_and_the_reason() {
    let files = Files::new();
    let with = |section: &str| format!("{VALID}\n[tracing]\n{section}\n");
    for (section, key, needle) in [
        ("protocol = \"grpc\"", "tracing.otlp_endpoint", "missing"),
        (
            "otlp_endpoint = \"collector:4317\"",
            "tracing.otlp_endpoint",
            "http://",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4318\"\nprotocol = \"thrift\"",
            "tracing.protocol",
            "\"thrift\" is not one of",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4318\"\nsampling_ratio = 1.5",
            "tracing.sampling_ratio",
            "must be 0.0 to 1.0",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4318\"\nsampling_ratio = -0.1",
            "tracing.sampling_ratio",
            "must be 0.0 to 1.0",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4318\"\ntrust_incoming = \"everyone\"",
            "tracing.trust_incoming",
            "\"trusted_proxies\", \"all\", \"none\"",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \" \"",
            "tracing.service_name",
            "not blank",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4317/traces\"\nprotocol = \"grpc\"",
            "tracing.otlp_endpoint",
            "host and port only",
        ),
    ] {
        assert_error(&files, &with(section), key, needle);
    }
    // A good section loads, and its absence is tracing off.
    let on = files
        .load(
            &with("otlp_endpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpc\""),
            in_2030(),
        )
        .unwrap();
    assert!(on.snapshot.tracing.is_some());
    // The default trust with no trusted proxy anywhere adopts no caller's trace: said once.
    assert!(
        on.warnings
            .iter()
            .any(|w| w.key == "tracing.trust_incoming" && w.message.contains("new trace")),
        "{:?}",
        on.warnings
    );
    assert!(
        files
            .load(VALID, in_2030())
            .unwrap()
            .snapshot
            .tracing
            .is_none()
    );
}
