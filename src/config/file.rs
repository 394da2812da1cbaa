//! The config file as written: a serde mirror of the TOML, with no meaning attached yet.
//!
//! Everything here is plain data (strings, numbers, paths); `validate.rs` turns it into a
//! [`Snapshot`](super::Snapshot) and reports every problem with its key path. Keeping the
//! mirror dumb means a type error here is the only thing serde can stop on; all semantic
//! checks are collected.

use serde::{Deserialize, Serialize};

use crate::license::LicenseSection;

/// The whole file. `deny_unknown_fields` everywhere: a misspelt key is an error, never ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub listeners: Vec<ListenerSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// Named upstreams that routes refer to by name.
    #[serde(default)]
    pub upstreams: Vec<UpstreamSection>,
    /// The credential vault routes inject upstream credentials from.
    pub vault: Option<VaultSection>,
    /// Headers that carry the client certificate's identity to upstreams.
    pub identity_headers: Option<IdentityHeadersSection>,
    /// The admin listener: metrics, health, reload, config, licenses. Absent: none.
    pub admin: Option<AdminSection>,
    /// Machine licenses: trusted issuer keys, the store, the grace period.
    pub licenses: Option<LicenseSection>,
    /// Trusted bearer-token issuers.
    #[serde(default)]
    pub token_issuers: Vec<crate::token::TokenIssuerSection>,
    /// Token cache size and the claim headers sent upstream.
    #[serde(default)]
    pub token: crate::token::TokenSection,
    /// The gateway's own OAuth 2.0 token issuer. Absent: none.
    pub issuer: Option<super::issuer::IssuerSection>,
    /// Machine enrollment (EST): the CA, the token store, license templates. Absent: none.
    pub enrollment: Option<super::enrollment::EnrollmentSection>,
    /// Rate limits for routes without their own, and the cap on tracked keys.
    pub limits: Option<LimitsSection>,
    /// Where shared state lives: `embedded` (default) or `redis` for a fleet.
    pub state: Option<StateSection>,
    /// Trace context and span export over OpenTelemetry OTLP. Absent: off.
    pub tracing: Option<TracingSection>,
}

/// `[tracing]`: W3C trace context to upstreams, spans to an OTLP collector.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    /// The collector: `http://host:4317` (gRPC) or `http://host:4318` (HTTP; the path
    /// `/v1/traces` is added when the URL has none). Required.
    pub otlp_endpoint: Option<String>,
    /// `"http"` (default: HTTP/protobuf, as the OTLP exporter spec says) or `"grpc"`.
    pub protocol: Option<String>,
    /// The share of new traces exported, 0.0 to 1.0. Default 0.01.
    pub sampling_ratio: Option<f64>,
    /// The `service.name` spans carry. Default "portcullis".
    pub service_name: Option<String>,
    /// Whose `traceparent` is adopted: `"trusted_proxies"` (default), `"all"` or `"none"`.
    pub trust_incoming: Option<String>,
    /// How often finished spans are sent to the collector, "100ms" to "1m". Default "5s"
    /// (OpenTelemetry's batch default): each export is one POST, so fewer, fuller batches
    /// cost the gateway less.
    pub export_interval: Option<String>,
}

/// `[state]`: the backend of the state a fleet shares.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// `"embedded"` (default: memory and redb, one machine) or `"redis"`.
    pub backend: Option<String>,
    /// `redis://host:port[/db]` or `rediss://...` (TLS); never with a password in it.
    pub url: Option<String>,
    /// The ACL user.
    pub username: Option<String>,
    /// A file holding the password (its first line).
    pub password_file: Option<String>,
    /// A `[vault]` record holding the password (kind `api_key`: the password; `basic`:
    /// `user:password`, which also sets the user).
    pub password_credential: Option<String>,
    /// PEM roots for `rediss://` (default: the system's).
    pub ca: Option<String>,
    /// Put in front of every key. Default `"portcullis:"`.
    pub key_prefix: Option<String>,
    /// Default "2s".
    pub connect_timeout: Option<String>,
    /// How long one call may take before the concern's failure mode applies. Default "250ms".
    pub command_timeout: Option<String>,
    /// Multiplexed connections per instance. Default 2.
    pub pool_size: Option<usize>,
    /// `url` is one node of a Redis Cluster (the others are found from it). Default false.
    pub cluster: Option<bool>,
    /// What each concern does while Redis cannot answer: `fail_open` or `fail_closed`.
    #[serde(default)]
    pub on_unavailable: OnUnavailableSection,
}

/// `[state.on_unavailable]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OnUnavailableSection {
    /// Default `fail_open`: each instance limits on its own, bounded by `[limits] max_keys`.
    pub rate_limits: Option<String>,
    /// Default `fail_open`: requests are admitted uncounted (and counted in
    /// `portcullis_state_fallbacks_total`); `fail_closed` refuses them with 503.
    pub quotas: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Limits for every route that has no `limits` of its own.
    pub default: Option<Vec<LimitSection>>,
    /// Rate-limit keys tracked at most (the oldest rested go first). Default 1000000. Also
    /// the quota counts held in memory (the rest wait on disk).
    pub max_keys: Option<usize>,
    /// The redb file where quota counts survive a restart. Default: the license store, when
    /// `[licenses]` is configured; a route quota without either is an error.
    pub quota_store: Option<String>,
}

/// `rewrite = { strip_prefix = true, add_prefix = "/v2", host = "target" }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteSection {
    /// Remove the route's `path_prefix` from the path. Default false.
    pub strip_prefix: Option<bool>,
    /// Put this in front of the path (after stripping).
    pub add_prefix: Option<String>,
    /// `"client"` (default: the client's Host), `"target"` (the target's host:port), or a
    /// fixed `host[:port]`.
    pub host: Option<String>,
}

/// `{ set = { "x-env" = "prod" }, add = { ... }, remove = ["server"] }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsSection {
    /// Replace every value of each header with this one.
    pub set: Option<std::collections::BTreeMap<String, String>>,
    /// Add this value beside any the message has.
    pub add: Option<std::collections::BTreeMap<String, String>>,
    /// Remove these headers.
    pub remove: Option<Vec<String>>,
}

/// `[vault]`: the file and where its master key comes from (exactly one source).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSection {
    pub file: Option<String>,
    pub master_key_file: Option<String>,
    pub master_key_env: Option<String>,
    pub master_key_credential: Option<String>,
}

/// `inject = { header = "X-Api-Key" }`, `{ query = "api_key" }`, `client_authorization = "..."`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InjectSection {
    pub header: Option<String>,
    pub query: Option<String>,
    /// Keep the client's own Authorization under this header name (default: removed).
    pub client_authorization: Option<String>,
    /// oauth2: the `[[upstreams]]` entry serving the token endpoint (its TLS settings apply).
    pub token_upstream: Option<String>,
    /// oauth2: the token endpoint's path on `token_upstream`.
    pub token_path: Option<String>,
    /// oauth2: the token endpoint as one URL (system roots, default timeouts).
    pub token_url: Option<String>,
    /// oauth2: the `scope` asked for.
    pub scope: Option<String>,
    /// oauth2: the `audience` asked for (some providers want one).
    pub audience: Option<String>,
    /// oauth2: how the client authenticates: "basic" (default) or "post".
    pub client_auth: Option<String>,
}

/// A route's `upstream`: a named upstream, or its own list of targets.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RouteUpstream {
    Named(String),
    Inline(Vec<String>),
}

/// `[[upstreams]]`: a named set of targets and how traffic is spread over them, checked,
/// retried and limited.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub name: Option<String>,
    /// `"http://host:port"` or `{ url = "...", weight = 3 }`.
    pub targets: Option<Vec<TargetEntry>>,
    /// `"least_request"` (default), `"round_robin"` or `"hash"`.
    pub balance: Option<String>,
    /// With `balance = "hash"`: `"client_ip"`, `"header:NAME"`, `"license"`, `"token_sub"`.
    pub hash_key: Option<String>,
    pub upstream_protocol: Option<String>,
    pub upstream_tls: Option<UpstreamTlsSection>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    /// The whole request, across retries, to the response head. Default: none.
    pub deadline: Option<String>,
    /// Longest pause inside a response body. Default "60s".
    pub body_timeout: Option<String>,
    /// Extra attempts after a failure. Default 2.
    pub retries: Option<u32>,
    pub retry_budget: Option<RetryBudgetSection>,
    /// HTTP/1.1 connections per target at most. Default: no cap.
    pub max_connections: Option<u32>,
    /// Requests per target waiting for a connection (with `max_connections`). Default 1024.
    pub max_pending: Option<u32>,
    /// `"fail"` (default: 503 no_healthy_upstream) or `"panic"` (every target anyway).
    pub all_down: Option<String>,
    pub health_check: Option<HealthCheckSection>,
    pub outlier: Option<OutlierSection>,
}

/// One target of an `[[upstreams]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TargetEntry {
    Url(String),
    Weighted(WeightedTarget),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedTarget {
    pub url: String,
    /// 1 to 1000. Default 1.
    pub weight: Option<u32>,
}

/// `retry_budget = { percent = 20, min_retries = 3 }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetSection {
    pub percent: Option<u32>,
    pub min_retries: Option<u32>,
}

/// `health_check = { path = "/healthz", interval = "5s", ... }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub expect_status: Option<Vec<u16>>,
}

/// `outlier = { consecutive_failures = 3, base_ejection = "10s", ... }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSection {
    pub consecutive_failures: Option<u32>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
    pub max_ejected_percent: Option<u32>,
}

/// `upstream_tls = { ca = "...", server_name = "...", pins = [...], min_tls = "1.2",
/// client_certificate = "...", key = "..." }`: every key optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSection {
    /// PEM bundle of the CAs the upstream's certificate must chain to. Default: Mozilla's
    /// roots (webpki-roots).
    pub ca: Option<String>,
    /// SNI and the name the certificate must carry. Default: the target's host.
    pub server_name: Option<String>,
    /// SPKI pins (`sha256/<base64>`): the upstream's key must be one of them as well.
    pub pins: Option<Vec<String>>,
    /// `"1.2"` (default) or `"1.3"`.
    pub min_tls: Option<String>,
    /// Certificate chain (PEM) presented to an upstream that asks (mutual TLS); with `key`.
    pub client_certificate: Option<String>,
    /// Private key (PEM) of `client_certificate`.
    pub key: Option<String>,
}

/// One limit: `{ key = "client_ip", rate = "100/s", burst = 20 }`, an in-flight cap
/// `{ key = "route", max_in_flight = 200 }`, a quota `{ key = "cert", quota = "100000/day" }`,
/// or any of them together.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    /// `client_ip`, `cert`, `license`, `token_sub`, `client_id`, `header:NAME` or `route`.
    pub key: Option<String>,
    /// `<count>/<unit>`: `"100/s"`, `"6000/min"`, `"1000/h"`, `"100000/day"`.
    pub rate: Option<String>,
    /// Requests a rested key may send at once. Default: the rate's count.
    pub burst: Option<u32>,
    /// Requests of one key served at once; more get 503 at once (nothing queues).
    pub max_in_flight: Option<u32>,
    /// `<count>/<window>`, window hour, day or month (UTC calendar windows): `"100000/day"`,
    /// `"2000000/month"`. Counts admitted requests; over it, 429 `quota_exhausted`.
    pub quota: Option<String>,
}

/// The admin listener. Loopback plain HTTP is the expected use; anywhere else it needs TLS
/// with client certificates, or a bearer token, or both.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `IP:port`, e.g. "127.0.0.1:9901".
    pub bind: Option<String>,
    /// A file holding the bearer token every admin request must carry (at least 32 chars).
    pub token_file: Option<String>,
    /// Serve TLS with these certificates.
    #[serde(default)]
    pub certificates: Vec<CertificateSection>,
    /// With `certificates`: require client certificates from this CA bundle.
    pub client_ca: Option<String>,
    /// Host names the admin API answers to, besides its own address (and `localhost` on a
    /// loopback bind) and its certificates' names. Other Host headers get 421, so a
    /// DNS-rebinding page cannot reach it under a name of its own.
    pub hosts: Option<Vec<String>>,
    /// Named admin identities, each with a role (`viewer`, `operator`, `admin`). With none,
    /// `token_file` (or, without it, a client certificate of `client_ca`, or loopback) is one
    /// identity with the `admin` role.
    #[serde(default)]
    pub identities: Vec<AdminIdentitySection>,
    /// The append-only audit trail: one JSON line per change made through the admin API.
    pub audit_log: Option<String>,
}

/// One admin identity: exactly one of `token_file`, `pins` or `subject`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminIdentitySection {
    /// Shown in the audit trail and the log.
    pub name: Option<String>,
    /// "viewer" (read), "operator" (reload, licenses) or "admin" (everything).
    pub role: Option<String>,
    /// A file holding this identity's bearer token (at least 32 characters).
    pub token_file: Option<String>,
    /// SPKI pins (`sha256/<base64>`) of this identity's client certificates.
    pub pins: Option<Vec<String>>,
    /// The RFC 4514 subject of this identity's client certificate (`CN=ops,O=Example`);
    /// needs `client_ca`, since anyone can sign a certificate with any subject.
    pub subject: Option<String>,
}

/// Header names for the client identity sent upstream. Client-sent copies of these
/// headers are always removed. `""` turns one off.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeadersSection {
    /// Default "X-Client-Cert-Subject" (RFC 4514 subject).
    pub subject: Option<String>,
    /// Default "X-Client-Cert-CN".
    pub common_name: Option<String>,
    /// Default "X-Client-Cert-Spki" (`sha256/<base64>`).
    pub spki: Option<String>,
    /// Default "X-Client-Cert-Fingerprint" (SHA-256, colon hex).
    pub fingerprint: Option<String>,
    /// Default "X-Client-Cert-Serial" (hex).
    pub serial: Option<String>,
}

/// Process-wide limits and timeouts. Every field has a secure default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Open connections across all listeners; one more is closed at accept. Default 10000.
    pub max_connections: Option<u64>,
    /// Time a client has to complete the TLS handshake. Default "10s".
    pub handshake_timeout: Option<String>,
    /// Time a client has to send a whole request head (slowloris); also how long an idle
    /// keep-alive HTTP/1.1 connection stays open. Default "10s".
    pub header_read_timeout: Option<String>,
    /// An HTTP/1.1 connection idle this long between requests gives its HTTP buffers back
    /// until the client sends again. Default "250ms".
    pub release_idle_after: Option<String>,
    /// Largest request head (request line and headers). Default 16384, at least 8192.
    pub max_header_bytes: Option<u64>,
    /// Most headers in one request. Default 100.
    pub max_headers: Option<u64>,
    /// How long in-flight requests may run after SIGTERM/SIGINT. Default "30s".
    pub shutdown_timeout: Option<String>,
    /// How long responses may wait for an HTTP/2 client that takes none of their bytes
    /// (a zero flow-control window, or no reads) before the connection is ended. Default "60s".
    pub send_timeout: Option<String>,
    /// Reload when the config file changes. Default true.
    pub watch_config: Option<bool>,
    /// Client headers with `_` in the name: "drop" (default), "refuse" (400) or "allow".
    /// Names that fold onto a header the gateway writes are removed whatever the setting.
    pub underscores_in_headers: Option<String>,
}

/// One TLS listener. Portcullis never serves plain HTTP on a listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    /// Unique name, used by routes and metrics.
    pub name: Option<String>,
    /// `IP:port` to bind.
    pub bind: Option<String>,
    /// Lowest TLS version accepted: "1.2" (default) or "1.3".
    pub min_tls: Option<String>,
    /// Key-exchange groups offered, in order of preference. Default: X25519MLKEM768 (the
    /// post-quantum hybrid), X25519, secp256r1.
    pub key_exchange: Option<Vec<String>>,
    /// "none" (default), "optional", "required" or "pinned" (self-signed machine
    /// certificates, admitted only by `pins`).
    pub client_auth: Option<String>,
    /// PEM bundle of CAs that client certificates must chain to.
    pub client_ca: Option<String>,
    /// Certificate revocation lists (PEM or DER files) that client certificates are checked
    /// against (with client_auth "optional" or "required").
    pub client_crl: Option<Vec<String>>,
    /// While a CRL is past its next update: "warn" (default: `check` warns, clients are
    /// checked against it as it is) or "refuse" (every client certificate is refused).
    pub client_crl_expired: Option<String>,
    /// Server certificates; the first is the default, the others are chosen by SNI.
    #[serde(default)]
    pub certificates: Vec<CertificateSection>,
    /// The host names served (`api.example.com`, `*.example.com`, an IP address); a request
    /// naming another gets 421. Default: the certificates' DNS and IP names.
    pub hosts: Option<Vec<String>>,
    /// SPKI pins (`sha256/<base64>`) admitted on this listener.
    pub pins: Option<Vec<String>>,
    /// Certificate SHA-256 fingerprints admitted on this listener.
    pub cert_fingerprints: Option<Vec<String>>,
    /// CIDRs allowed to connect. Default: everyone not denied.
    pub allow: Option<Vec<String>>,
    /// CIDRs refused; deny wins over allow.
    pub deny: Option<Vec<String>>,
    /// Proxies whose X-Forwarded-For, Forwarded and PROXY headers are believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Expect a PROXY protocol (v1 or v2) header before TLS, from trusted proxies only.
    pub proxy_protocol: Option<bool>,
    /// The forwarding header the trusted proxies write: "x-forwarded-for" (default) or
    /// "forwarded". The other one is removed and never believed.
    pub forwarded_header: Option<String>,
    /// Offer TLS session resumption (a session cache, TLS 1.3 tickets). Default true.
    pub tls_resumption: Option<bool>,
    /// New connections one client address may open, e.g. "20/s"; more are closed at accept,
    /// before any TLS work. Default: no limit.
    pub connection_rate: Option<String>,
    /// Connections a rested address may open at once under `connection_rate`. Default: the
    /// rate's count.
    pub connection_burst: Option<u32>,
    /// Connections one client address may hold open at once. Default: no limit.
    pub max_connections_per_ip: Option<u32>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    /// PEM file: the end-entity certificate first, then intermediates.
    pub chain: Option<String>,
    /// PEM file: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: Option<String>,
}

/// One route: which requests it takes and where they go.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Unique name, used in logs and metrics.
    pub name: Option<String>,
    /// Listener names this route is served on. Default: all listeners.
    pub listeners: Option<Vec<String>>,
    /// Host the request must name (Host header or :authority), without port. Default: any.
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries; the longest matching prefix wins. Default "/".
    pub path_prefix: Option<String>,
    /// Methods allowed. Default: any.
    pub methods: Option<Vec<String>>,
    /// The name of an `[[upstreams]]` entry, or one or more `http://host:port` or
    /// `https://host:port` targets (all of one scheme): an upstream of the route's own.
    pub upstream: Option<RouteUpstream>,
    /// The vault record injected into requests to the upstream.
    pub credentials: Option<String>,
    /// Where an `api_key` record goes, and where the client's own Authorization is kept.
    pub inject: Option<InjectSection>,
    /// Retry a request with a non-idempotent method (POST, PATCH) after a failure once it
    /// was sent, when it has no body. Default false.
    pub retry_non_idempotent: Option<bool>,
    /// How `https://` targets are verified and what the gateway presents to them.
    pub upstream_tls: Option<UpstreamTlsSection>,
    /// Pass WebSocket upgrades through (after every policy stage). Default false: an
    /// upgrade to WebSocket is refused with 403 `websocket_not_allowed`.
    pub websocket: Option<bool>,
    /// The path and Host the upstream receives.
    pub rewrite: Option<RewriteSection>,
    /// Headers set, added or removed on requests to the upstream.
    pub request_headers: Option<HeaderOpsSection>,
    /// Headers set, added or removed on responses to the client.
    pub response_headers: Option<HeaderOpsSection>,
    /// Largest request body accepted; larger is a 413. Default: no limit.
    pub max_body_bytes: Option<u64>,
    /// Time to open a TCP connection to a target. Default "5s".
    pub connect_timeout: Option<String>,
    /// Time from sending the request to receiving the response head. Default "30s".
    pub response_timeout: Option<String>,
    /// How long an idle pooled upstream connection is kept. Default "90s".
    pub idle_timeout: Option<String>,
    /// `"auto"` (default: HTTP/2 when an https:// target offers it by ALPN, else HTTP/1.1),
    /// `"http1"`, `"h2"` (https:// targets, HTTP/2 only) or `"h2c"` (http:// targets, HTTP/2
    /// in clear with prior knowledge, inside a trusted network).
    pub upstream_protocol: Option<String>,
    /// SPKI pins admitted on this route (on top of the listener's).
    pub pins: Option<Vec<String>>,
    /// Certificate fingerprints admitted on this route.
    pub cert_fingerprints: Option<Vec<String>>,
    /// Client CIDRs allowed on this route. Default: everyone not denied.
    pub allow: Option<Vec<String>>,
    /// Client CIDRs refused on this route.
    pub deny: Option<Vec<String>>,
    /// "required": every request needs a machine license that grants. Default "none".
    pub license: Option<String>,
    /// "bearer" (a valid token is required) or "none". Required on every route once
    /// `[[token_issuers]]` exist; "none" otherwise.
    pub auth: Option<String>,
    /// Scopes the token must all carry (needs auth = "bearer").
    pub scopes: Option<Vec<String>>,
    /// Scopes of which the token must carry at least one (needs auth = "bearer").
    pub any_scopes: Option<Vec<String>>,
    /// Names of the token issuers accepted here. Default: every configured issuer.
    pub issuers: Option<Vec<String>>,
    /// Forward `;` path parameters (`/a;jsessionid=1`) instead of refusing them with 400
    /// invalid_path. Matching ignores them either way. Default false.
    pub path_params: Option<bool>,
    /// Match `path_prefix` in any case, for upstreams that ignore case. Default false (a
    /// path that matches another route only when case is ignored is refused).
    pub case_insensitive: Option<bool>,
    /// This route's rate limits and in-flight caps (instead of `[limits] default`); an
    /// empty list: none.
    pub limits: Option<Vec<LimitSection>>,
}
