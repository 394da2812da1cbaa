//! The OAuth2 client credentials grant (RFC 6749 4.4) the gateway runs for routes that inject
//! an `oauth2` vault record: it asks the token endpoint (an upstream, with that upstream's
//! TLS settings and pool) for a token, caches it until shortly before it expires, and sends
//! it as `Authorization: Bearer`. One grant at a time per source: concurrent requests that
//! find no usable token wait for the one grant in flight (single flight); a token nearing
//! its end is renewed by one request while the others keep using it.
//!
//! Hand-written rather than the `oauth2` crate: that crate brings its own HTTP client, and
//! the grant must go over the gateway's own upstream connections (pinned TLS, mutual TLS,
//! HTTP/2, health and failover) and obey the gateway's clock (time is a parameter).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::BodyExt;
use zeroize::{Zeroize, Zeroizing};

use super::body::RequestBody;
use super::{Upstream, epoch_ms, pool};
use crate::config::vault::{ClientAuth, TokenSourceSpec};
use crate::metrics::Metrics;
use crate::routing::rewrite::credential::encode_query;

/// A token response larger than this is not a token response.
const MAX_RESPONSE: usize = 64 * 1024;
/// A token whose response names no `expires_in` is kept this long (RFC 6749 5.1 leaves it
/// to the server's documentation; five minutes bounds the damage of a wrong guess).
const DEFAULT_LIFETIME_SECS: u64 = 300;
/// After a failed grant, requests fail at once for this long instead of each asking again:
/// a token endpoint that is down is not hammered by every request.
const HOLD_AFTER_FAILURE_NS: u64 = 1_000_000_000;
const NS: u64 = 1_000_000_000;

/// Why no token could be had. The text goes to the log, never to the client, and never
/// holds the secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("the token endpoint's upstream has no target available")]
    NoTarget,
    #[error("cannot connect to the token endpoint ({0:?})")]
    Connect(std::io::ErrorKind),
    #[error("TLS to the token endpoint failed ({0})")]
    Tls(&'static str),
    #[error("the token endpoint did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the exchange with the token endpoint failed: {0}")]
    Exchange(String),
    #[error("the token endpoint is at max_connections and max_pending")]
    Overloaded,
    #[error("the token endpoint answered {status}{}", error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Refused { status: u16, error: Option<String> },
    #[error("the token endpoint's answer is not a token response: {0}")]
    Malformed(&'static str),
    #[error("the token endpoint gave a \"{0}\" token, not a bearer token")]
    NotBearer(String),
    #[error("the last grant failed under a second ago; not asked again yet")]
    Held,
}

/// A token in the cache. Times on the gateway's monotonic clock (ns).
struct Token {
    value: HeaderValue,
    serial: u64,
    /// From here on one request renews it while the others keep using it.
    refresh_at: u64,
    /// From here on it is not sent (a margin before its real end).
    expires_at: u64,
}

/// The header a request sends, and which token it is (a 401 names the token it refused).
#[derive(Clone)]
pub struct Bearer {
    pub value: HeaderValue,
    pub serial: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    Fresh,
    /// Still valid, but time to get the next one.
    Renew,
    Stale,
}

fn freshness(t: &Token, now: u64) -> Freshness {
    if now >= t.expires_at {
        Freshness::Stale
    } else if now >= t.refresh_at {
        Freshness::Renew
    } else {
        Freshness::Fresh
    }
}

/// When a token granted at `now` for `lifetime_secs` is renewed and when it is no longer
/// sent: a tenth of its life (at most 10 s) early for clock and network, and renewal a
/// quarter of its life (at most 2 min) before that.
fn schedule(now: u64, lifetime_secs: u64) -> (u64, u64) {
    let life = lifetime_secs.clamp(1, 366 * 86_400) * NS;
    let expires = now + life - (life / 10).min(10 * NS);
    let refresh = expires - (life / 4).min(120 * NS);
    (refresh, expires)
}

/// One OAuth2 client at one token endpoint, with its cached token.
pub struct TokenSource {
    spec: TokenSourceSpec,
    endpoint: Arc<Upstream>,
    current: ArcSwapOption<Token>,
    /// Held by the one grant in flight.
    flight: tokio::sync::Mutex<()>,
    /// A request is renewing a token that is still valid.
    renewing: AtomicBool,
    /// Monotonic ns until which no grant is tried after a failure.
    held_until: AtomicU64,
    serial: AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSource({:?})", self.spec)
    }
}

impl TokenSource {
    pub fn new(spec: TokenSourceSpec, endpoint: Arc<Upstream>) -> Self {
        TokenSource {
            spec,
            endpoint,
            current: ArcSwapOption::empty(),
            flight: tokio::sync::Mutex::new(()),
            renewing: AtomicBool::new(false),
            held_until: AtomicU64::new(0),
            serial: AtomicU64::new(0),
        }
    }

    pub fn spec(&self) -> &TokenSourceSpec {
        &self.spec
    }

    pub fn endpoint(&self) -> &Arc<Upstream> {
        &self.endpoint
    }

    /// The token to send at `now` (monotonic ns): the cached one while it is fresh, else
    /// one grant for every request waiting.
    pub async fn bearer(&self, now: u64, metrics: &Metrics) -> Result<Bearer, GrantError> {
        // The cached token is read without taking a reference count; nothing is held
        // across an await.
        let current = match self.current.load().as_deref() {
            Some(t) => match freshness(t, now) {
                Freshness::Fresh => return Ok(t.bearer()),
                Freshness::Renew => Some(t.bearer()),
                Freshness::Stale => None,
            },
            None => None,
        };
        if let Some(valid) = current {
            // One request renews; the others (and this one, if renewal fails) keep the
            // token that is still valid.
            if self
                .renewing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return Ok(valid);
            }
            let renewed = self.renew(Some(valid.serial), now, metrics).await;
            self.renewing.store(false, Ordering::Release);
            return Ok(renewed.unwrap_or(valid));
        }
        self.renew(None, now, metrics).await
    }

    /// A fresh token after the upstream refused token `spent` (401): one grant, however
    /// many requests were refused with it.
    pub async fn after_refusal(
        &self,
        spent: u64,
        now: u64,
        metrics: &Metrics,
    ) -> Result<Bearer, GrantError> {
        self.renew(Some(spent), now, metrics).await
    }

    /// Drop token `spent` from the cache (the upstream refused it and the request could not
    /// be sent again): the next request asks for a new one.
    pub fn forget(&self, spent: u64) {
        let cached = self.current.load();
        if cached.as_ref().is_some_and(|t| t.serial == spent) {
            self.current.compare_and_swap(&cached, None);
        }
    }

    /// Grant a new token unless, once it is our turn, the cached one will do: not stale,
    /// and not the one `spent` names.
    async fn renew(
        &self,
        spent: Option<u64>,
        now: u64,
        metrics: &Metrics,
    ) -> Result<Bearer, GrantError> {
        let _flight = self.flight.lock().await;
        if let Some(t) = self.current.load().as_deref()
            && freshness(t, now) != Freshness::Stale
            && spent != Some(t.serial)
        {
            return Ok(t.bearer());
        }
        if now < self.held_until.load(Ordering::Acquire) {
            return Err(GrantError::Held);
        }
        // Boxed: the grant's HTTP exchange is ~11 KB of future, rarely run, and held inline
        // it would grow every request's future, which HTTP/2 streams move at spawn.
        match Box::pin(self.grant()).await {
            Ok((value, lifetime)) => {
                let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
                let (refresh_at, expires_at) = schedule(now, lifetime);
                let token = Token {
                    value,
                    serial,
                    refresh_at,
                    expires_at,
                };
                let bearer = token.bearer();
                self.current.store(Some(Arc::new(token)));
                metrics.credential_grant(&self.spec.record, true);
                Ok(bearer)
            }
            Err(e) => {
                self.held_until
                    .store(now.saturating_add(HOLD_AFTER_FAILURE_NS), Ordering::Release);
                metrics.credential_grant(&self.spec.record, false);
                Err(e)
            }
        }
    }

    /// One client credentials grant: the header to send and the token's lifetime (s).
    async fn grant(&self) -> Result<(HeaderValue, u64), GrantError> {
        let up = &*self.endpoint;
        let index = up.choose(None, 0, epoch_ms()).ok_or(GrantError::NoTarget)?;
        let target = &up.targets()[index];
        let settings = up.settings();
        let req = self.request(target.host.clone())?;
        let to = pool::Target {
            authority: &target.authority,
            tls: target.tls.as_ref(),
            protocol: settings.protocol,
        };
        let wait = settings.response_timeout;
        let exchange = async {
            let (resp, lease, _) = pool::send(
                &target.pool,
                &to,
                settings.connect_timeout,
                req,
                target.pool.busy(),
            )
            .await
            .map_err(|f| match f.error {
                pool::SendError::Connect(e) => GrantError::Connect(e.kind()),
                pool::SendError::Tls(e) => {
                    GrantError::Tls(crate::tls::upstream::failure_reason(&e))
                }
                pool::SendError::Exchange(e) => GrantError::Exchange(e.to_string()),
                pool::SendError::Overloaded => GrantError::Overloaded,
            })?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|_| GrantError::Malformed("the body failed or is over 64 KiB"))?
                .to_bytes();
            lease.checkin();
            Ok::<_, GrantError>((status, body))
        };
        let (status, body) = tokio::time::timeout(wait, exchange)
            .await
            .map_err(|_| GrantError::Timeout(wait))??;
        if !status.is_success() {
            return Err(GrantError::Refused {
                status: status.as_u16(),
                error: error_code(&body),
            });
        }
        parse_token(&body)
    }

    /// The token request: a form POST, the client authenticated as configured.
    fn request(&self, host: HeaderValue) -> Result<Request<RequestBody>, GrantError> {
        let s = &self.spec;
        let mut form = Zeroizing::new(String::from("grant_type=client_credentials"));
        for (name, value) in [("scope", &s.scope), ("audience", &s.audience)] {
            if let Some(v) = value {
                form.push('&');
                form.push_str(name);
                form.push('=');
                form.push_str(&encode_query(v.as_bytes()));
            }
        }
        let mut req = Request::new(RequestBody::empty());
        *req.method_mut() = Method::POST;
        *req.uri_mut() = http::Uri::from(s.path.clone());
        let h = req.headers_mut();
        h.insert(header::HOST, host);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        match s.client_auth {
            ClientAuth::Basic => {
                // RFC 6749 2.3.1: id and secret form-encoded, then `id:secret` in Basic.
                let mut pair = Zeroizing::new(encode_query(s.client_id.as_bytes()));
                pair.push(':');
                pair.push_str(&encode_query(s.client_secret.expose()));
                let mut text = Zeroizing::new(String::from("Basic "));
                base64::engine::general_purpose::STANDARD.encode_string(pair.as_bytes(), &mut text);
                let mut v = HeaderValue::from_str(&text)
                    .map_err(|_| GrantError::Malformed("the client id or secret"))?;
                v.set_sensitive(true);
                h.insert(header::AUTHORIZATION, v);
            }
            ClientAuth::Post => {
                form.push_str("&client_id=");
                form.push_str(&encode_query(s.client_id.as_bytes()));
                form.push_str("&client_secret=");
                form.push_str(&encode_query(s.client_secret.expose()));
            }
        }
        *req.body_mut() = RequestBody::full(Bytes::from(form.as_bytes().to_vec()));
        Ok(req)
    }
}

impl Token {
    fn bearer(&self) -> Bearer {
        Bearer {
            value: self.value.clone(),
            serial: self.serial,
        }
    }
}

/// A token response (RFC 6749 5.1): `Authorization: Bearer <token>` and the lifetime.
fn parse_token(body: &[u8]) -> Result<(HeaderValue, u64), GrantError> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        access_token: Option<String>,
        token_type: Option<String>,
        expires_in: Option<serde_json::Value>,
    }
    let mut r: TokenResponse =
        serde_json::from_slice(body).map_err(|_| GrantError::Malformed("not JSON"))?;
    let mut token = r
        .access_token
        .take()
        .ok_or(GrantError::Malformed("no access_token"))?;
    let result = (|| {
        match r.token_type.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("bearer") => {}
            Some(t) => {
                let shown: String = t.chars().take(32).filter(char::is_ascii_graphic).collect();
                return Err(GrantError::NotBearer(shown));
            }
            None => return Err(GrantError::Malformed("no token_type")),
        }
        // RFC 6750 2.1: b64token characters only, so the header can carry it as is.
        let ok = !token.is_empty()
            && token.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
            });
        if !ok {
            return Err(GrantError::Malformed(
                "access_token has characters a bearer token cannot carry",
            ));
        }
        // Some servers send the number as a string.
        let lifetime = match &r.expires_in {
            None => DEFAULT_LIFETIME_SECS,
            Some(serde_json::Value::Number(n)) => n.as_u64().ok_or(GrantError::Malformed(
                "expires_in is not a whole number of seconds",
            ))?,
            Some(serde_json::Value::String(s)) => s.parse().map_err(|_| {
                GrantError::Malformed("expires_in is not a whole number of seconds")
            })?,
            Some(_) => {
                return Err(GrantError::Malformed(
                    "expires_in is not a whole number of seconds",
                ));
            }
        };
        if lifetime == 0 {
            return Err(GrantError::Malformed("expires_in is 0"));
        }
        let mut text = Zeroizing::new(String::with_capacity(7 + token.len()));
        text.push_str("Bearer ");
        text.push_str(&token);
        let mut v = HeaderValue::from_str(&text)
            .map_err(|_| GrantError::Malformed("access_token is not a header value"))?;
        v.set_sensitive(true);
        Ok((v, lifetime))
    })();
    token.zeroize();
    result
}

/// The `error` code of an error response (RFC 6749 5.2), when it is a short plain code:
/// the log shows `invalid_client`, never free text the server echoed back.
fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("error")?.as_str()?;
    (code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_fresh_then_renewed_ahead_of_its_end_then_stale() {
        let now = 1_000 * NS;
        let (refresh, expires) = schedule(now, 3600);
        // One hour: sent until 10 s before the end, renewed from 2 min before that.
        assert_eq!(expires, now + 3590 * NS);
        assert_eq!(refresh, now + 3470 * NS);
        let t = Token {
            value: HeaderValue::from_static("Bearer x"),
            serial: 1,
            refresh_at: refresh,
            expires_at: expires,
        };
        assert_eq!(freshness(&t, now), Freshness::Fresh);
        assert_eq!(freshness(&t, refresh - 1), Freshness::Fresh);
        assert_eq!(freshness(&t, refresh), Freshness::Renew);
        assert_eq!(freshness(&t, expires - 1), Freshness::Renew);
        assert_eq!(freshness(&t, expires), Freshness::Stale);
    }

    #[test]
    fn a_short_lived_token_keeps_most_of_its_life() {
        let (refresh, expires) = schedule(0, 20);
        assert_eq!(expires, 18 * NS);
        assert_eq!(refresh, 13 * NS);
        let (refresh, expires) = schedule(0, 1);
        assert!(refresh < expires && expires < NS);
    }

    #[test]
    fn a_token_response_becomes_a_sensitive_bearer_header() {
        let (v, life) = parse_token(
            br#"{"access_token":"eyJ.abc-_~+/=","token_type":"bearer","expires_in":"120"}"#,
        )
        .unwrap();
        assert_eq!(v, "Bearer eyJ.abc-_~+/=");
        assert!(v.is_sensitive());
        assert_eq!(life, 120);
        let (_, life) = parse_token(br#"{"access_token":"t","token_type":"Bearer"}"#).unwrap();
        assert_eq!(life, DEFAULT_LIFETIME_SECS);
    }

    #[test]
    fn token_responses_that_cannot_be_sent_are_refused() {
        for (body, why) in [
            (&br#"not json"#[..], "not JSON"),
            (br#"{"token_type":"Bearer"}"#, "no access_token"),
            (br#"{"access_token":"t"}"#, "no token_type"),
            (
                br#"{"access_token":"t\r\nX: y","token_type":"Bearer"}"#,
                "characters",
            ),
            (
                br#"{"access_token":"t","token_type":"Bearer","expires_in":0}"#,
                "is 0",
            ),
            (
                br#"{"access_token":"t","token_type":"Bearer","expires_in":-5}"#,
                "whole number",
            ),
        ] {
            let e = parse_token(body).unwrap_err().to_string();
            assert!(e.contains(why), "{e} / {why}");
        }
        let e = parse_token(br#"{"access_token":"t","token_type":"mac"}"#).unwrap_err();
        assert!(matches!(e, GrantError::NotBearer(ref t) if t == "mac"));
    }

    #[test]
    fn only_a_plain_error_code_reaches_the_log() {
        assert_eq!(
            error_code(br#"{"error":"invalid_client","error_description":"secret abc wrong"}"#)
                .as_deref(),
            Some("invalid_client")
        );
        assert_eq!(error_code(br#"{"error":"Secret: abc"}"#), None);
        assert_eq!(error_code(b"<html>"), None);
    }
}
