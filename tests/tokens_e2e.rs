//! Proves bearer tokens end to end, through the TLS listener: tokens signed with ES256, RS256
//! and EdDSA keys generated at test time pass a `auth = "bearer"` route, and the upstream gets
//! the verified subject, client id, scopes and issuer as `X-Auth-*` headers and never the
//! Authorization header nor a client-sent `X-Auth-*` copy (on `auth = "none"` routes either);
//! each refusal has its status, reason and RFC 6750 challenge (`token_missing` 401 with a bare
//! `Bearer`, `token_invalid` 401 with `error="invalid_token"`, `token_expired` 401 when the
//! gateway clock passes `exp`, `insufficient_scope` 403 naming the route's scopes); a token in
//! the query string or a form body is not read; a route limited to one issuer refuses another
//! issuer's valid token; no denial echoes the token and each carries its own request id, the
//! one in `x-request-id`; a remote JWKS served over HTTPS (trusted through `jwks_ca`) verifies
//! tokens as soon as the gateway has started; a repeated token is served from one cached
//! verification.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;
use portcullis::denial::Denial;
use portcullis::token::TokenDenial;
use serde_json::{Value, json};
use support::jwt::{JwksServer, TestKey, jwks};
use support::*;

const CORP_ISS: &str = "https://id.corp.test/";
const PARTNER_ISS: &str = "https://partner.test";
const REMOTE_ISS: &str = "https://remote.test/";
const AUD: &str = "portcullis";

/// The default claim header names (src/token/upstream.rs).
const SUBJECT: &str = "x-auth-subject";
const CLIENT_ID: &str = "x-auth-client-id";
const SCOPES: &str = "x-auth-scopes";
const ISSUER: &str = "x-auth-issuer";
const CLAIM_HEADERS: [&str; 4] = [SUBJECT, CLIENT_ID, SCOPES, ISSUER];

/// RFC 6750 challenges, exactly as the gateway writes them.
const BARE: &str = "Bearer";
const INVALID: &str = "Bearer error=\"invalid_token\"";
const EXPIRED: &str = "Bearer error=\"invalid_token\", error_description=\"the token has expired\"";

struct Keys {
    es256: TestKey,
    rs256: TestKey,
    ed25519: TestKey,
    /// Same kid as `es256`, trusted by nobody.
    rogue: TestKey,
    partner: TestKey,
}

/// Generated once per test binary: RSA generation is the slow part.
static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    es256: TestKey::generate("es", Algorithm::ES256),
    rs256: TestKey::generate("rs", Algorithm::RS256),
    ed25519: TestKey::generate("ed", Algorithm::EdDSA),
    rogue: TestKey::generate("es", Algorithm::ES256),
    partner: TestKey::generate("p1", Algorithm::ES256),
});

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A fresh `jti` per token, so no two tests' tokens are the same string.
fn jti() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("jti-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Claims that pass on the orders route: corp, our audience, orders:read, ten minutes left.
fn claims() -> Value {
    let now = unix_now();
    json!({
        "iss": CORP_ISS,
        "aud": AUD,
        "sub": "alice",
        "client_id": "billing-agent",
        "scope": "orders:read invoices:read",
        "iat": now - 10,
        "exp": now + 600,
        "jti": jti(),
    })
}

/// `claims()` with fields replaced (`null` removes one).
fn claims_with(changes: Value) -> Value {
    let mut c = claims();
    let map = c.as_object_mut().expect("object");
    for (k, v) in changes.as_object().expect("object") {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    c
}

/// Two issuers with PEM keys, and four routes:
/// `orders` (bearer, `orders:read`, corp only), `any` (bearer, any issuer, no scope),
/// `regional` (bearer, `orders:read` and one of `eu`/`us`), `open` (auth = "none").
fn config(pki: &Pki, up: &Upstream) -> String {
    let k = &*KEYS;
    for (file, key) in [
        ("es256.pub.pem", &k.es256),
        ("rs256.pub.pem", &k.rs256),
        ("ed25519.pub.pem", &k.ed25519),
        ("partner.pub.pem", &k.partner),
    ] {
        pki.write(file, &key.public_pem);
    }
    format!(
        "{}\
         [[token_issuers]]\nname = \"corp\"\nissuer = \"{CORP_ISS}\"\naudiences = [\"{AUD}\"]\nkeys = [\n  \
           {{ pem = \"es256.pub.pem\", algorithms = [\"ES256\"], kid = \"es\" }},\n  \
           {{ pem = \"rs256.pub.pem\", algorithms = [\"RS256\"], kid = \"rs\" }},\n  \
           {{ pem = \"ed25519.pub.pem\", algorithms = [\"EdDSA\"], kid = \"ed\" }},\n]\n\n\
         [[token_issuers]]\nname = \"partner\"\nissuer = \"{PARTNER_ISS}\"\naudiences = [\"{AUD}\"]\n\
         keys = [{{ pem = \"partner.pub.pem\", algorithms = [\"ES256\"], kid = \"p1\" }}]\n\n\
         {}{}{}{}{}",
        server("watch_config = false"),
        listener("public", ""),
        route(
            "orders",
            "/orders",
            &[&up.url()],
            "auth = \"bearer\"\nscopes = [\"orders:read\"]\nissuers = [\"corp\"]"
        ),
        route("any", "/any", &[&up.url()], "auth = \"bearer\""),
        route(
            "regional",
            "/regional",
            &[&up.url()],
            "auth = \"bearer\"\nscopes = [\"orders:read\"]\nany_scopes = [\"eu\", \"us\"]"
        ),
        route("open", "/", &[&up.url()], "auth = \"none\""),
    )
}

struct Lab {
    pki: Pki,
    up: Upstream,
    gw: Gateway,
}

impl Lab {
    async fn start() -> Lab {
        let pki = Pki::generate();
        let up = Upstream::echo("api").await;
        let gw = Gateway::start(pki.dir(), &config(&pki, &up)).await;
        Lab { pki, up, gw }
    }

    /// `GET path` on a new connection, with `Authorization: Bearer <token>` if given and
    /// `headers`.
    async fn get(&self, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> TestResponse {
        send_one(&self.pki, self.gw.addr(), bearer_get(path, token, headers)).await
    }

    fn advance(&self, by: Duration) {
        self.gw.shared().clock.advance(by);
    }

    fn cached_tokens(&self) -> usize {
        self.gw
            .shared()
            .generation
            .load()
            .snapshot
            .tokens
            .cached_tokens()
    }
}

fn bearer_get(path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> http::Request<BoxBody> {
    let mut b = request("GET", path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(empty()).expect("request")
}

/// Asserts the JSON denial (`status`, `reason`, request id = `x-request-id`), the exact
/// `WWW-Authenticate` challenge, and that neither the body nor any header carries `token`
/// (or its signature). Returns the request id.
fn assert_token_denied(
    r: &TestResponse,
    status: u16,
    reason: &str,
    challenge: &str,
    token: Option<&str>,
) -> String {
    let id = r.assert_denied(status, reason);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(challenge),
        "challenge of {reason}"
    );
    if let Some(token) = token {
        // The whole token and each of its segments long enough to mean something (a
        // stripped signature is "", `not.a.token` ends in "token").
        let needles = std::iter::once(token).chain(token.split('.').filter(|s| s.len() >= 16));
        for needle in needles {
            assert!(
                !r.text().contains(needle),
                "the body echoes the token: {}",
                r.text()
            );
            for (name, value) in &r.headers {
                assert!(
                    !String::from_utf8_lossy(value.as_bytes()).contains(needle),
                    "header {name} echoes the token"
                );
            }
        }
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_of_each_key_type_pass_and_the_upstream_gets_the_claims_not_the_token() {
    let lab = Lab::start().await;
    let k = &*KEYS;
    for key in [&k.es256, &k.rs256, &k.ed25519] {
        let token = key.token(&claims());
        let r = lab.get("/orders/42", Some(&token), &[]).await;
        assert_eq!(r.header("www-authenticate"), None, "{}", key.alg_name());
        let echo = r.echo();
        assert_eq!(echo.uri, "/orders/42");
        assert_eq!(echo.header(SUBJECT), Some("alice"), "{}", key.alg_name());
        assert_eq!(echo.header(CLIENT_ID), Some("billing-agent"));
        assert_eq!(echo.header(SCOPES), Some("invoices:read orders:read"));
        assert_eq!(echo.header(ISSUER), Some("corp"));
        assert!(
            !echo.has_header("authorization"),
            "{}: the upstream got the Authorization header",
            key.alg_name()
        );
        let seen = serde_json::to_string(&echo.headers).expect("json");
        assert!(!seen.contains(&token), "the token reached the upstream");
    }
    // The scheme is case-insensitive.
    let token = k.es256.token(&claims());
    let r = send_one(
        &lab.pki,
        lab.gw.addr(),
        request("GET", "/orders/1")
            .header("authorization", format!("bEaReR {token}"))
            .body(empty())
            .expect("request"),
    )
    .await;
    r.echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_claim_headers_never_reach_the_upstream() {
    let lab = Lab::start().await;
    let forged = [
        ("x-auth-subject", "root"),
        ("X-Auth-Client-Id", "admin-console"),
        ("X-AUTH-SCOPES", "orders:read admin"),
        ("x-auth-issuer", "corp"),
    ];

    // A token route: the verified values, once each, replace the forged ones; a claim the
    // token lacks (no client_id) is absent, not the forged value.
    let token = KEYS.es256.token(&claims_with(json!({ "client_id": null })));
    let echo = lab.get("/orders", Some(&token), &forged).await.echo();
    assert_eq!(echo.header_all(SUBJECT), ["alice"]);
    assert_eq!(echo.header_all(SCOPES), ["invoices:read orders:read"]);
    assert_eq!(echo.header_all(ISSUER), ["corp"]);
    assert!(
        !echo.has_header(CLIENT_ID),
        "a forged client id passed: {:?}",
        echo.header_all(CLIENT_ID)
    );

    // An auth = "none" route: no token is read, every forged claim header is removed, and the
    // Authorization header (not the gateway's) is passed on untouched.
    let echo = lab
        .get(
            "/public",
            None,
            &[
                forged.as_slice(),
                &[("authorization", "Basic dXNlcjpwYXNz")],
            ]
            .concat(),
        )
        .await
        .echo();
    for name in CLAIM_HEADERS {
        assert!(
            !echo.has_header(name),
            "{name} reached the upstream of an auth = \"none\" route: {:?}",
            echo.header_all(name)
        );
    }
    assert_eq!(echo.header("authorization"), Some("Basic dXNlcjpwYXNz"));

    // Also when the client sends a token the none route does not read.
    let echo = lab.get("/public", Some(&token), &forged).await.echo();
    for name in CLAIM_HEADERS {
        assert!(!echo.has_header(name), "{name} reached the upstream");
    }

    // The same over HTTP/2.
    let tls = TlsClient::new(&lab.pki)
        .h2()
        .connect(lab.gw.addr(), "localhost")
        .await
        .expect("TLS connect (h2)");
    let mut h2 = H2::handshake(tls).await.expect("HTTP/2 handshake");
    for (path, token) in [("/orders/h2", Some(&token)), ("/public/h2", None)] {
        let mut b = h2_request("GET", "localhost", path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in forged {
            b = b.header(k, v);
        }
        let echo = h2
            .call(b.body(empty()).expect("request"))
            .await
            .expect("h2 response")
            .echo();
        let want: [&[&str]; 4] = match token {
            Some(_) => [&["alice"], &[], &["invoices:read orders:read"], &["corp"]],
            None => [&[], &[], &[], &[]],
        };
        for (name, want) in CLAIM_HEADERS.iter().zip(want) {
            assert_eq!(echo.header_all(name), want, "{name} on {path} over HTTP/2");
        }
        assert!(
            !echo.has_header("authorization"),
            "{path}: Authorization passed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_bearer_token_is_401_token_missing_with_a_bare_challenge() {
    let lab = Lab::start().await;
    let missing = Denial::Token(TokenDenial::Missing);
    let before = lab.gw.denial_count(missing);
    let r = lab.get("/orders", None, &[]).await;
    assert_token_denied(&r, 401, "token_missing", BARE, None);
    // Another scheme is no bearer credential either (RFC 6750 3.1).
    let r = lab
        .get("/orders", None, &[("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    assert_token_denied(&r, 401, "token_missing", BARE, None);
    assert_eq!(
        lab.up.request_count(),
        0,
        "a refused request reached the upstream"
    );
    assert_eq!(lab.gw.denial_count(missing), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_query_string_or_a_form_body_is_not_read() {
    let lab = Lab::start().await;
    let token = KEYS.es256.token(&claims());
    for path in [
        format!("/orders?access_token={token}"),
        format!("/orders?token={token}&x=1"),
    ] {
        let r = lab.get(&path, None, &[]).await;
        assert_token_denied(&r, 401, "token_missing", BARE, Some(&token));
    }
    let form = request("POST", "/orders")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(full(format!("access_token={token}")))
        .expect("request");
    let r = send_one(&lab.pki, lab.gw.addr(), form).await;
    assert_token_denied(&r, 401, "token_missing", BARE, Some(&token));
    assert_eq!(
        lab.up.request_count(),
        0,
        "a refused request reached the upstream"
    );
    // The same token in the header passes: the refusals were about where it was.
    lab.get("/orders", Some(&token), &[]).await.echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_signature_does_not_verify_is_401_token_invalid() {
    let lab = Lab::start().await;
    let k = &*KEYS;
    let good = k.es256.token(&claims());
    let (signing_input, _) = good.rsplit_once('.').expect("three segments");
    let elevated = {
        // The claims swapped for more scopes after signing, the signature kept.
        let header = good.split('.').next().expect("header");
        let claims = support::jwt::b64(
            &serde_json::to_vec(&claims_with(json!({ "scope": "orders:read admin" })))
                .expect("json"),
        );
        let signature = good.rsplit('.').next().expect("signature");
        format!("{header}.{claims}.{signature}")
    };
    let cases = [
        (
            "signed by an untrusted key with a trusted kid",
            k.rogue.token(&claims()),
        ),
        ("claims changed after signing", elevated),
        ("signature stripped", format!("{signing_input}.")),
        ("another key's signature", {
            let other = k.ed25519.token(&claims());
            format!("{signing_input}.{}", other.rsplit('.').next().expect("sig"))
        }),
        (
            "alg none",
            format!(
                "{}.{}.",
                support::jwt::b64(br#"{"alg":"none","kid":"es"}"#),
                support::jwt::b64(&serde_json::to_vec(&claims()).expect("json"))
            ),
        ),
    ];
    for (what, token) in cases {
        let r = lab.get("/orders", Some(&token), &[]).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_token_denied(&r, 401, "token_invalid", INVALID, Some(&token));
    }
    assert_eq!(
        lab.up.request_count(),
        0,
        "a forged token reached the upstream"
    );
    lab.get("/orders", Some(&good), &[]).await.echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_401_token_expired_once_the_gateway_clock_passes_exp() {
    let lab = Lab::start().await;
    let now = unix_now();
    let cached = KEYS.es256.token(&claims_with(json!({ "exp": now + 600 })));
    let fresh = KEYS.rs256.token(&claims_with(json!({ "exp": now + 300 })));
    lab.get("/orders", Some(&cached), &[]).await.echo();

    // Past exp plus the default 60 s leeway.
    lab.advance(Duration::from_secs(600 + 60 + 5));
    // Verified before: refused from the cache entry.
    let r = lab.get("/orders", Some(&cached), &[]).await;
    assert_token_denied(&r, 401, "token_expired", EXPIRED, Some(&cached));
    // Never seen: refused by a full verification.
    let r = lab.get("/orders", Some(&fresh), &[]).await;
    assert_token_denied(&r, 401, "token_expired", EXPIRED, Some(&fresh));
    assert_eq!(lab.up.request_count(), 1);
    assert_eq!(lab.gw.denial_count(Denial::Token(TokenDenial::Expired)), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_route_scopes_is_403_insufficient_scope_naming_them() {
    let lab = Lab::start().await;
    let invoices_only = KEYS
        .es256
        .token(&claims_with(json!({ "scope": "invoices:read" })));
    let r = lab.get("/orders", Some(&invoices_only), &[]).await;
    assert_token_denied(
        &r,
        403,
        "insufficient_scope",
        "Bearer error=\"insufficient_scope\", scope=\"orders:read\"",
        Some(&invoices_only),
    );

    // all_of and any_of: the challenge lists both and says which are alternatives.
    let no_region = KEYS.es256.token(&claims());
    let r = lab.get("/regional", Some(&no_region), &[]).await;
    assert_token_denied(
        &r,
        403,
        "insufficient_scope",
        "Bearer error=\"insufficient_scope\", scope=\"orders:read eu us\", \
         error_description=\"requires all of: orders:read; and one of: eu us\"",
        Some(&no_region),
    );
    assert_eq!(lab.up.request_count(), 0);

    // `scp` as an array counts as well as `scope`.
    let eu = KEYS.es256.token(&claims_with(
        json!({ "scope": "orders:read", "scp": ["eu"] }),
    ));
    let echo = lab.get("/regional/x", Some(&eu), &[]).await.echo();
    assert_eq!(echo.header(SCOPES), Some("eu orders:read"));
    // A route with no scopes takes the token that lacked orders:read.
    lab.get("/any", Some(&invoices_only), &[]).await.echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_limited_to_one_issuer_refuses_a_valid_token_of_another() {
    let lab = Lab::start().await;
    let partner = KEYS
        .partner
        .token(&claims_with(json!({ "iss": PARTNER_ISS, "sub": "bob" })));
    let r = lab.get("/orders", Some(&partner), &[]).await;
    assert_token_denied(&r, 401, "token_invalid", INVALID, Some(&partner));

    // The token is valid: a route open to every issuer takes it, and it is cached now ...
    let echo = lab.get("/any/1", Some(&partner), &[]).await.echo();
    assert_eq!(echo.header(ISSUER), Some("partner"));
    assert_eq!(echo.header(SUBJECT), Some("bob"));
    // ... which does not make the corp-only route take it.
    let r = lab.get("/orders", Some(&partner), &[]).await;
    assert_token_denied(&r, 401, "token_invalid", INVALID, Some(&partner));

    // corp's key cannot sign for partner (the issuer picks the keys), nor the reverse.
    let cross = KEYS
        .es256
        .token(&claims_with(json!({ "iss": PARTNER_ISS })));
    let r = lab.get("/any", Some(&cross), &[]).await;
    assert_token_denied(&r, 401, "token_invalid", INVALID, Some(&cross));
    assert_eq!(lab.up.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_denial_carries_its_own_request_id_the_one_in_x_request_id() {
    let lab = Lab::start().await;
    let k = &*KEYS;
    let cases: Vec<(Option<String>, &str, u16, &str, &str)> = vec![
        (None, "/orders", 401, "token_missing", BARE),
        (
            Some("not.a.token".to_owned()),
            "/orders",
            401,
            "token_invalid",
            INVALID,
        ),
        (
            Some(
                k.es256
                    .token(&claims_with(json!({ "aud": "someone-else" }))),
            ),
            "/orders",
            401,
            "token_invalid",
            INVALID,
        ),
        (
            Some(
                k.es256
                    .token(&claims_with(json!({ "exp": unix_now() - 3600 }))),
            ),
            "/orders",
            401,
            "token_expired",
            EXPIRED,
        ),
        (
            Some(k.es256.token(&claims_with(json!({ "scope": "x" })))),
            "/orders",
            403,
            "insufficient_scope",
            "Bearer error=\"insufficient_scope\", scope=\"orders:read\"",
        ),
    ];
    let mut ids = std::collections::HashSet::new();
    // Several on one keep-alive connection: denials do not close it.
    let mut conn = connect_h1(&lab.pki, lab.gw.addr()).await;
    for (token, path, status, reason, challenge) in &cases {
        for _ in 0..2 {
            let r = conn
                .call(bearer_get(path, token.as_deref(), &[]))
                .await
                .expect("response");
            let id = assert_token_denied(&r, *status, reason, challenge, token.as_deref());
            assert!(ids.insert(id.clone()), "request id {id} used twice");
        }
    }
    assert_eq!(ids.len(), 2 * cases.len());
    assert_eq!(lab.up.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_token_twice_is_served_both_times_from_one_cached_verification() {
    let lab = Lab::start().await;
    assert_eq!(lab.cached_tokens(), 0);
    let token = KEYS.ed25519.token(&claims());
    let mut conn = connect_h1(&lab.pki, lab.gw.addr()).await;
    for n in 1..=2 {
        let r = conn
            .call(bearer_get(&format!("/orders/{n}"), Some(&token), &[]))
            .await
            .expect("response");
        let echo = r.echo();
        assert_eq!(echo.header(SUBJECT), Some("alice"), "request {n}");
        assert_eq!(lab.cached_tokens(), 1, "after request {n}");
    }
    // And from another connection.
    lab.get("/orders/3", Some(&token), &[]).await.echo();
    assert_eq!(lab.cached_tokens(), 1);
    assert_eq!(lab.up.request_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_issuer_over_https_verifies_tokens_once_the_gateway_has_started() {
    let pki = Pki::generate();
    let up = Upstream::echo("remote").await;
    let k = &*KEYS;
    let jwks_server = JwksServer::start(&pki, &jwks(&[&k.es256, &k.ed25519])).await;
    let toml = format!(
        "{}\
         [[token_issuers]]\nname = \"remote\"\nissuer = \"{REMOTE_ISS}\"\naudiences = [\"{AUD}\"]\n\
         algorithms = [\"ES256\", \"EdDSA\"]\njwks_url = \"{}\"\njwks_ca = \"ca.pem\"\n\n{}{}",
        server("watch_config = false"),
        jwks_server.url(),
        listener("public", ""),
        route(
            "remote",
            "/",
            &[&up.url()],
            "auth = \"bearer\"\nissuers = [\"remote\"]"
        ),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    assert!(
        jwks_server.hits() >= 1,
        "the gateway did not fetch the JWKS"
    );

    // No wait: start-up fetched the keys before serving.
    for key in [&k.es256, &k.ed25519] {
        let token = key.token(&claims_with(json!({ "iss": REMOTE_ISS })));
        let echo = send_one(&pki, gw.addr(), bearer_get("/r", Some(&token), &[]))
            .await
            .echo();
        assert_eq!(echo.header(ISSUER), Some("remote"), "{}", key.alg_name());
        assert_eq!(echo.header(SUBJECT), Some("alice"));
    }
    // A key the JWKS does not hold, and a token of the right key for another issuer.
    for (what, token) in [
        (
            "key not in the JWKS",
            k.rs256.token(&claims_with(json!({ "iss": REMOTE_ISS }))),
        ),
        ("unknown issuer", k.es256.token(&claims())),
    ] {
        let r = send_one(&pki, gw.addr(), bearer_get("/r", Some(&token), &[])).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_token_denied(&r, 401, "token_invalid", INVALID, Some(&token));
    }
}
