//! Proves the token endpoint over real HTTPS: client credentials with HTTP Basic, form
//! fields, JSON bodies and the client certificate (RFC 8705, bound with `cnf.x5t#S256`,
//! and refused by the gateway without that certificate);
//! scopes intersected with the client's; every refusal as its RFC 6749 error
//! (`invalid_client`, `invalid_scope`, `unsupported_grant_type`, `invalid_request`,
//! `invalid_grant`); tokens accepted by a protected route with no extra config; and the
//! JWKS and RFC 8414 metadata.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine as _;
use portcullis::identity::ClientIdentity;
use portcullis::issuer::clients::NewClient;
use serde_json::json;
use support::oauth::*;
use support::*;

const TOKEN: &str = "/oauth2/token";

#[tokio::test]
async fn client_credentials_with_basic_auth_give_a_token_the_protected_route_accepts() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read", "stock"]);

    let tokens = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    assert_eq!(tokens.scope, "orders:read stock");
    assert_eq!(tokens.expires_in, 600, "the default lifetime is 10 minutes");
    assert_eq!(tokens.refresh.len(), 43, "256 random bits, base64url");
    let claims = tokens.claims();
    assert_eq!(claims["iss"], ISS);
    assert_eq!(claims["aud"], "portcullis");
    assert_eq!(claims["client_id"], "erp-1");
    assert_eq!(claims["sub"], "erp-1");
    assert_eq!(claims["scope"], "orders:read stock");
    assert!(
        claims["jti"].as_str().is_some_and(|j| j.len() >= 20),
        "{claims}"
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        600
    );
    assert!(
        claims.get("cnf").is_none(),
        "a secret-authenticated token is not bound"
    );
    let header = header_of(&tokens.access);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "at+jwt");

    let ok = send_one(
        &pki,
        gw.addr(),
        get_with_token("/api/orders", &tokens.access),
    )
    .await;
    let echo = ok.echo();
    assert_eq!(echo.header("x-auth-client-id"), Some("erp-1"));
    assert_eq!(echo.header("x-auth-issuer"), Some("portcullis"));
    let without = send_one(&pki, gw.addr(), get("/api/orders")).await;
    without.assert_denied(401, "token_missing");
}

#[tokio::test]
async fn client_secret_post_and_json_bodies_work_like_basic() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read", "stock"]);

    let post = send_one(
        &pki,
        gw.addr(),
        post_form(
            TOKEN,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "erp-1"),
                ("client_secret", &secret),
                ("scope", "stock"),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(Tokens::from(&post).scope, "stock");

    let cases = [
        json!({"grant_type": "client_credentials", "client_id": "erp-1", "client_secret": secret}),
        json!({"grant_type": "client_credentials", "client_id": "erp-1", "client_secret": secret, "scope": ["orders:read"]}),
    ];
    for (body, scope) in cases.iter().zip(["orders:read stock", "orders:read"]) {
        let resp = send_one(&pki, gw.addr(), post_json(TOKEN, body, None)).await;
        assert_eq!(Tokens::from(&resp).scope, scope, "{body}");
    }
    // JSON with HTTP Basic, too.
    let basic_json = post_json(
        TOKEN,
        &json!({"grant_type": "client_credentials"}),
        Some(&basic("erp-1", &secret)),
    );
    Tokens::from(&send_one(&pki, gw.addr(), basic_json).await);
}

#[tokio::test]
async fn requested_scopes_are_intersected_with_the_clients_and_none_in_common_is_invalid_scope() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read", "stock"]);
    let auth = basic("erp-1", &secret);

    let ask = |scope: &'static str| {
        post_form(
            TOKEN,
            &[("grant_type", "client_credentials"), ("scope", scope)],
            Some(&auth),
        )
    };
    let empty = send_one(&pki, gw.addr(), ask("")).await;
    assert_eq!(
        Tokens::from(&empty).scope,
        "orders:read stock",
        "empty means the default"
    );
    let partly = send_one(&pki, gw.addr(), ask("orders:read admin")).await;
    assert_eq!(Tokens::from(&partly).scope, "orders:read");
    let none = send_one(&pki, gw.addr(), ask("admin")).await;
    assert_oauth_error(&none, 400, "invalid_scope");
    let malformed = send_one(&pki, gw.addr(), ask("a\"b")).await;
    assert_oauth_error(&malformed, 400, "invalid_scope");

    // A token without the route's scope is refused there.
    let stock = Tokens::from(&send_one(&pki, gw.addr(), ask("stock")).await);
    let resp = send_one(&pki, gw.addr(), get_with_token("/api/x", &stock.access)).await;
    resp.assert_denied(403, "insufficient_scope");
}

#[tokio::test]
async fn wrong_unknown_disabled_or_missing_credentials_are_invalid_client_with_a_challenge() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let old = add_client(&gw, "old", &["orders:read"]);
    let issuer = gw.issuer();
    portcullis::issuer::clients::disable(issuer.store(), "old").expect("disable");

    let grant = [("grant_type", "client_credentials")];
    let cases = [
        (
            "wrong secret",
            post_form(TOKEN, &grant, Some(&basic("erp-1", "not-it"))),
        ),
        (
            "unknown client",
            post_form(TOKEN, &grant, Some(&basic("nobody", &secret))),
        ),
        (
            "disabled client",
            post_form(TOKEN, &grant, Some(&basic("old", &old))),
        ),
        ("no credentials", post_form(TOKEN, &grant, None)),
        (
            "another scheme",
            post_form(TOKEN, &grant, Some("Bearer abc")),
        ),
        (
            "client_id without secret or certificate",
            post_form(
                TOKEN,
                &[("grant_type", "client_credentials"), ("client_id", "erp-1")],
                None,
            ),
        ),
    ];
    for (name, req) in cases {
        let resp = send_one(&pki, gw.addr(), req).await;
        assert_oauth_error(&resp, 401, "invalid_client");
        assert_eq!(
            resp.header("www-authenticate").as_deref(),
            Some("Basic realm=\"portcullis\""),
            "{name}"
        );
    }
    // The right secret still works (failures stayed under the limits).
    client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
}

#[tokio::test]
async fn bad_grant_types_and_malformed_requests_get_their_oauth_error() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let auth = basic("erp-1", &secret);
    let a = Some(auth.as_str());

    let unsupported = post_form(TOKEN, &[("grant_type", "password")], a);
    let resp = send_one(&pki, gw.addr(), unsupported).await;
    assert_oauth_error(&resp, 400, "unsupported_grant_type");

    let unknown_refresh = post_form(
        TOKEN,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "nonsense"),
        ],
        a,
    );
    let resp = send_one(&pki, gw.addr(), unknown_refresh).await;
    assert_oauth_error(&resp, 400, "invalid_grant");

    let repeated = request("POST", TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", auth.as_str())
        .body(full("grant_type=client_credentials&scope=a&scope=b"))
        .unwrap();
    let text = request("POST", TOKEN)
        .header("content-type", "text/plain")
        .header("authorization", auth.as_str())
        .body(full("grant_type=client_credentials"))
        .unwrap();
    let invalid_request = [
        (
            "missing grant_type",
            post_form(TOKEN, &[("scope", "orders:read")], a),
        ),
        (
            "missing refresh_token",
            post_form(TOKEN, &[("grant_type", "refresh_token")], a),
        ),
        (
            "two authentication methods",
            post_form(
                TOKEN,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_secret", &secret),
                ],
                a,
            ),
        ),
        ("a repeated parameter", repeated),
        ("a body that is neither form nor JSON", text),
        (
            "JSON that is not an object of strings",
            post_json(TOKEN, &json!({"grant_type": 1}), a),
        ),
    ];
    for (name, req) in invalid_request {
        let resp = send_one(&pki, gw.addr(), req).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text());
        assert_oauth_error(&resp, 400, "invalid_request");
    }

    let big = post_form(
        TOKEN,
        &[
            ("grant_type", "client_credentials"),
            ("pad", &"x".repeat(17_000)),
        ],
        a,
    );
    let resp = send_one(&pki, gw.addr(), big).await;
    assert_oauth_error(&resp, 413, "invalid_request");

    let resp = send_one(&pki, gw.addr(), get(TOKEN)).await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow").as_deref(), Some("POST"));
}

#[tokio::test]
async fn tls_client_auth_binds_the_token_to_the_client_certificate() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let identity = ClientIdentity::from_der(pki.client.cert().as_ref()).expect("identity");
    let none = add_client_with(
        &gw,
        NewClient {
            id: "agent-7".into(),
            scopes: vec!["orders:read".into()],
            cert_pins: vec![identity.spki_sha256],
            cert_only: true,
            ..NewClient::default()
        },
    );
    assert!(none.is_none(), "a certificate-only client has no secret");
    add_client_with(
        &gw,
        NewClient {
            id: "other".into(),
            cert_pins: vec![[7; 32]],
            cert_only: true,
            ..NewClient::default()
        },
    );

    let with_cert = TlsClient::new(&pki).identity(&pki.client);
    let ask = |id: &str| {
        post_form(
            TOKEN,
            &[("grant_type", "client_credentials"), ("client_id", id)],
            None,
        )
    };
    let tls = with_cert
        .connect(gw.addr(), "localhost")
        .await
        .expect("mTLS");
    let mut conn = H1::handshake(tls).await.expect("h1");
    let resp = conn.call(ask("agent-7")).await.expect("response");
    let tokens = Tokens::from(&resp);
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(identity.cert_sha256);
    assert_eq!(tokens.claims()["cnf"]["x5t#S256"], thumbprint);
    assert_eq!(tokens.claims()["client_id"], "agent-7");

    // The certificate is not the one "other" registered.
    let resp = conn.call(ask("other")).await.expect("response");
    assert_oauth_error(&resp, 401, "invalid_client");
    // Without a certificate, a client id alone proves nothing.
    let resp = send_one(&pki, gw.addr(), ask("agent-7")).await;
    assert_oauth_error(&resp, 401, "invalid_client");

    let ok = conn
        .call(get_with_token("/api/orders", &tokens.access))
        .await
        .expect("response");
    assert_eq!(ok.echo().header("x-auth-client-id"), Some("agent-7"));
    // Bound: the same token without the certificate is refused by the gateway.
    let stolen = send_one(
        &pki,
        gw.addr(),
        get_with_token("/api/orders", &tokens.access),
    )
    .await;
    stolen.assert_denied(401, "token_invalid");
    // Introspection reports the binding (RFC 8705 3.2).
    let resp = conn
        .call(post_form(
            "/oauth2/introspect",
            &[("client_id", "agent-7"), ("token", &tokens.access)],
            None,
        ))
        .await
        .expect("response");
    let v = resp.json();
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["cnf"]["x5t#S256"], thumbprint);
}

#[tokio::test]
async fn the_jwks_and_the_metadata_describe_the_issuer_and_hold_no_private_key() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let tokens = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;

    let jwks = send_one(&pki, gw.addr(), get("/.well-known/jwks.json")).await;
    assert_eq!(jwks.status, 200);
    let keys = jwks.json()["keys"].as_array().expect("keys").clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], header_of(&tokens.access)["kid"]);
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["alg"], "ES256");
    assert!(keys[0].get("d").is_none(), "no private key: {}", keys[0]);

    let meta = send_one(
        &pki,
        gw.addr(),
        get("/.well-known/oauth-authorization-server"),
    )
    .await;
    let m = meta.json();
    assert_eq!(m["issuer"], ISS);
    assert_eq!(m["token_endpoint"], format!("{ISS}/oauth2/token"));
    assert_eq!(m["jwks_uri"], format!("{ISS}/.well-known/jwks.json"));
    assert_eq!(m["revocation_endpoint"], format!("{ISS}/oauth2/revoke"));
    assert_eq!(
        m["introspection_endpoint"],
        format!("{ISS}/oauth2/introspect")
    );
    assert_eq!(
        m["grant_types_supported"],
        json!(["client_credentials", "refresh_token"])
    );
    assert_eq!(m["tls_client_certificate_bound_access_tokens"], true);
    let methods = m["token_endpoint_auth_methods_supported"].to_string();
    for method in [
        "client_secret_basic",
        "client_secret_post",
        "tls_client_auth",
    ] {
        assert!(methods.contains(method), "{methods}");
    }
}

#[tokio::test]
async fn an_eddsa_issuer_under_a_prefix_signs_tokens_the_gateway_accepts() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let keys = "algorithm = \"EdDSA\"\npath_prefix = \"/auth\"\naccess_token_ttl = \"2m\"";
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), keys)).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let resp = send_one(
        &pki,
        gw.addr(),
        post_form(
            "/auth/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some(&basic("erp-1", &secret)),
        ),
    )
    .await;
    let tokens = Tokens::from(&resp);
    assert_eq!(tokens.expires_in, 120);
    assert_eq!(header_of(&tokens.access)["alg"], "EdDSA");
    let ok = send_one(&pki, gw.addr(), get_with_token("/api/x", &tokens.access)).await;
    ok.echo();
    // Without the prefix the path is an ordinary route, not the issuer.
    let routed = send_one(
        &pki,
        gw.addr(),
        post_form(TOKEN, &[("grant_type", "client_credentials")], None),
    )
    .await;
    assert_eq!(routed.echo().uri, TOKEN);
}
