//! Writes the seed corpora under `fuzz/corpus/<target>/`: real PROXY v1/v2 headers, HTTP
//! heads (smuggling attempts among them), forwarding lines, JWTs signed with a key made here
//! and thrown away, licenses signed the same way, a vault sealed under the targets' fixed
//! throwaway master key, forms, paths, hosts and configs. Run from `fuzz/`:
//! `cargo run --release --bin seeds` (run.sh builds it; the seeds are committed). Each seed's
//! file name is a digest of its bytes, so running it again adds nothing twice (signed
//! seeds are new each time: keys are fresh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Built with the targets' coverage flags, so it links the libFuzzer runtime too (its own
// `main` stays the program's).
extern crate libfuzzer_sys;

use std::net::SocketAddr;
use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::ip_filter::proxy_protocol::{encode_v1, encode_v2};
use portcullis::license::{Match, Payload, SigningKey};
use portcullis::vault::{Kind, MasterKey, Secret, Vault};
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn write(target: &str, seeds: impl IntoIterator<Item = Vec<u8>>) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    for seed in seeds {
        // FNV-1a: a stable name from the content, no hashing crate needed.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in &seed {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
        std::fs::write(dir.join(format!("seed-{h:016x}")), &seed).expect("seed");
    }
}

fn text(seeds: &[&str]) -> Vec<Vec<u8>> {
    seeds.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn proxy() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (src, dst) in [
        ("198.51.100.7:4711", "10.0.0.1:443"),
        ("[2001:db8::7]:4711", "[2001:db8::1]:443"),
        ("[::ffff:198.51.100.7]:1", "[2001:db8::1]:443"),
    ] {
        for mut h in [encode_v1(sa(src), sa(dst)), encode_v2(sa(src), sa(dst))] {
            out.push(h.clone());
            h.extend_from_slice(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
            out.push(h);
        }
    }
    out.extend(text(&[
        "PROXY UNKNOWN\r\n",
        "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
        "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n",
        "GET / HTTP/1.1\r\n\r\n",
    ]));
    // v2: LOCAL, UDP, unix sockets, and an address block followed by TLVs (ALPN, authority).
    let mut local = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
    local[12] = 0x20;
    out.push(local);
    let mut udp = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
    udp[13] = 0x12;
    out.push(udp);
    let mut unix = b"\r\n\r\n\0\r\nQUIT\n\x21\x31\x00\xd8".to_vec();
    unix.extend_from_slice(&[b'/'; 216]);
    out.push(unix);
    let mut tlv = encode_v2(sa("198.51.100.7:4711"), sa("10.0.0.1:443"));
    let extra = b"\x01\x00\x02h2\x02\x00\x0bexample.com";
    let len = 12 + extra.len() as u16;
    tlv[14..16].copy_from_slice(&len.to_be_bytes());
    tlv.extend_from_slice(extra);
    out.push(tlv);
    out
}

fn framing() -> Vec<Vec<u8>> {
    let heads = [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /t HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTRANSFER-ENCODING:\tgzip, chunked\r\ncontent-length:  6 \r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nX: y\r\n Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked\n\n",
        "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\0b\r\nContent-Length: 1\r\n\r\nx",
        "GET / HTTP/1.1\r\nHost: a\rContent-Length: 1\r\n\r\nx",
    ];
    // The first byte of a framing seed says where to cut the rest in two.
    heads
        .iter()
        .flat_map(|h| [0u8, 128, 255].map(|cut| [&[cut][..], h.as_bytes()].concat()))
        .collect()
}

fn jwts() -> Vec<Vec<u8>> {
    // A throwaway key from the system's random generator, never written anywhere.
    let secret = MasterKey::generate().expect("random key").to_base64();
    let key = EncodingKey::from_secret(secret.as_bytes());
    let base = json!({
        "iss": "https://id.example.com/", "aud": "portcullis", "sub": "machine-1",
        "exp": NOW + 300, "iat": NOW - 10, "nbf": NOW - 10, "jti": "j-1",
        "scope": "orders:read orders:write", "client_id": "agent-7",
    });
    let variants = [
        json!({}),
        json!({"aud": ["other", "portcullis"], "scp": ["a", "b"], "scope": null}),
        json!({"exp": NOW - 3600}),
        json!({"exp": 1.8e9, "nbf": 1.7999e9}),
        json!({"exp": NOW + 10 * 86_400}),
        json!({"cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}}),
        json!({"cnf": {"jkt": "x"}}),
        json!({"sub": "line\nbreak"}),
        json!({"scp": "a  b", "azp": "client-x"}),
        json!({"exp": -1}),
    ];
    let mut out = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let mut claims = base.clone();
        for (k, val) in v.as_object().into_iter().flatten() {
            claims[k] = val.clone();
        }
        let mut header = Header::new(Algorithm::HS256);
        if i % 2 == 0 {
            header.kid = Some(format!("k{i}"));
        }
        out.push(
            jsonwebtoken::encode(&header, &claims, &key)
                .expect("token")
                .into_bytes(),
        );
    }
    out.extend(text(&[
        // alg none, crit, a JWE, a stripped signature
        "eyJhbGciOiJub25lIn0.eyJleHAiOjE4MDAwMDAzMDB9.c2ln",
        "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiYiJdfQ.eyJleHAiOjE4MDAwMDAzMDB9.c2ln",
        "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE4MDAwMDAzMDB9.",
    ]));
    out
}

fn licenses() -> Vec<Vec<u8>> {
    let key = SigningKey::generate().expect("signing key");
    let pin = |n: u8| portcullis::identity::format_spki_pin(&[n; 32]);
    let base = Payload {
        id: "lic-1".into(),
        kid: key.public_key().kid().to_owned(),
        customer: "Acme".into(),
        machine_id: "machine-1".into(),
        binding: Match::Pin,
        pins: vec![pin(1)],
        ips: Vec::new(),
        routes: Vec::new(),
        scopes: Vec::new(),
        issued_at: NOW - 86_400,
        not_before: NOW - 86_400,
        expires_at: NOW + 30 * 86_400,
        quota: None,
    };
    let mut ip = base.clone();
    ip.binding = Match::Ip;
    ip.pins.clear();
    ip.ips = vec![
        "10.1.2.0/24".into(),
        "2001:db8::/32".into(),
        "::ffff:10.9.0.0/112".into(),
    ];
    let mut both = base.clone();
    both.binding = Match::PinAndIp;
    both.ips = vec!["10.1.2.3/32".into()];
    both.routes = vec!["orders".into()];
    both.scopes = vec!["read".into()];
    both.quota = Some("100000/day".into());
    let mut out: Vec<Vec<u8>> = [base, ip, both]
        .iter()
        .map(|p| key.issue(p).expect("license").into_bytes())
        .collect();
    if let Some(first) = out.first() {
        let mut pasted = b"  ".to_vec();
        pasted.extend_from_slice(first);
        pasted.push(b'\n');
        out.push(pasted);
    }
    out.extend(text(&["PCL1", "PCL2.e30.AAAA", "PCL1.e30."]));
    out
}

fn vaults() -> Vec<Vec<u8>> {
    let master =
        MasterKey::from_base64("QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=").expect("master key");
    let dir = std::env::temp_dir().join(format!("portcullis-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp folder");
    let path = dir.join("vault.json");
    let mut v = Vault::create(&path, &master).expect("vault");
    let mut out = Vec::new();
    v.save().expect("save");
    out.push(std::fs::read(&path).expect("read"));
    v.set(
        "billing-api",
        Kind::ApiKey,
        &Secret::new(b"k-123".to_vec()),
        NOW,
    )
    .expect("set");
    v.set(
        "partner",
        Kind::Basic,
        &Secret::new(b"user:pass".to_vec()),
        NOW,
    )
    .expect("set");
    v.set(
        "idp",
        Kind::OAuth2,
        &Secret::new(b"client:secret".to_vec()),
        NOW,
    )
    .expect("set");
    v.set("upstream", Kind::Bearer, &Secret::new(b"tok".to_vec()), NOW)
        .expect("set");
    v.save().expect("save");
    out.push(std::fs::read(&path).expect("read"));
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn main() {
    write("proxy_protocol", proxy());
    write("framing_scanner", framing());
    write(
        "forwarded",
        text(&[
            "for=198.51.100.7;proto=https;by=10.0.0.1",
            "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\", For=10.0.0.2",
            "for=\"198.51.100.7:8080\";host=example.com, for=10.0.0.3",
            "for=unknown",
            "for=_hidden, for=10.0.0.2",
            "for=\"198.51.100.7",
            "proto=https;by=10.0.0.1",
            "203.0.113.7, 2001:db8::1, [2001:db8::2]:443, 198.51.100.2:8080",
            "10.0.0.3, 10.0.0.2",
            "::ffff:198.51.100.7, 10.0.0.9",
            "198.51.100.7,,10.0.0.2",
            "for=\"a,b\";x=\";\", for=1.2.3.4",
        ]),
    );
    write("jwt", jwts());
    write(
        "form",
        text(&[
            "grant_type=client_credentials&client_id=agent-7&client_secret=s3cr%3Dt%26x&scope=orders%3Aread+orders%3Awrite",
            "grant_type=refresh_token&refresh_token=abc&&scope=",
            "token=eyJhbGciOiJIUzI1NiJ9.e30.c2ln&token_type_hint=access_token",
            "a=%E2%82%AC&b=%ZZ",
            "a=%C3%28",
            "=&=x&y",
            "a=%2",
        ]),
    );
    write(
        "path",
        text(&[
            "/",
            "*",
            "/api/v1/orders/42",
            "/API//v1///Orders/",
            "/%61dmin/%7Euser/%2Fetc",
            "/a/%2e%2E/admin",
            "/a/..;x/admin",
            "/admin;jsessionid=1/x%3Bparam",
            "/caf%C3%A9/%e2%82%ac/%20space",
            "/a\\b",
            "/a%00b",
            "/%G1",
            "relative/path",
            "/.%2e/",
        ]),
    );
    write(
        "host",
        text(&[
            "example.com",
            "Secure.Example.COM.:443",
            "internal_host-1.corp:8080",
            "[2001:DB8::1]:8443",
            "[::ffff:10.0.0.1]",
            "user@example.com",
            "a..b",
            ".",
            "example.com:",
            "example.com:8x",
            "[fe80::1%eth0]",
            "10.0.0.1:443",
        ]),
    );
    write("license", licenses());
    let example = std::fs::read("../config/portcullis.example.toml").expect("example config");
    let mut configs = vec![example];
    configs.extend(text(&[
        "",
        "[server]\nmax_connections = 10\n",
        "[[listeners]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n[[listeners.certificates]]\nchain = \"c.pem\"\nkey = \"k.pem\"\n\n[[routes]]\nname = \"r\"\nlisteners = [\"public\"]\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n",
        "[server]\nmax_connections = \"many\"\nunknown = 1\n",
        "[[token_issuers]]\nname = \"corp\"\nissuer = \"https://id.example.com/\"\naudiences = [\"portcullis\"]\njwks_url = \"https://id.example.com/jwks\"\n",
        "[vault]\npath = \"vault.json\"\nmaster_key_env = \"NOPE\"\n",
        "[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n",
        "x = [1, 2\n",
    ]));
    write("config", configs);
    write("vault", vaults());
}
