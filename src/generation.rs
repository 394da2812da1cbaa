//! One reload, one [`Generation`]: the config snapshot and the running parts built from it
//! (the licensing service, the token issuer, the upstream pools, each route's metric series,
//! the HTTP server settings), held in one `ArcSwap` and stored once. A request loads the
//! generation once and every stage reads from that load, so no request sees the licensing
//! of one config with the routes of another.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Snapshot;
use crate::issuer::Issuer;
use crate::metrics::RouteSeries;
use crate::routing::Route;
use crate::state::licenses::Licensing;
use crate::state::limits::LocalLimits;
use crate::state::quotas::{EmbeddedQuotas, QuotaStoreError};
use crate::state::redis::limits::SharedLimits;
use crate::state::redis::{RedisStore, StoreError};
use crate::upstream::Upstream;
use crate::upstream::oauth2::TokenSource;

/// Everything one config load runs with.
pub struct Generation {
    pub snapshot: Arc<Snapshot>,
    /// Machine licenses, when `[licenses]` is configured.
    pub licensing: Option<Arc<Licensing>>,
    /// The gateway's own token issuer, when `[issuer]` is configured.
    pub issuer: Option<Arc<Issuer>>,
    /// Machine enrollment (EST), when `[enrollment]` is configured. Set after `new`.
    pub enrollment: Option<Arc<crate::enrollment::Enrollment>>,
    /// Each route's running parts, by [`Route::id`].
    routes: Vec<RouteParts>,
    /// The OAuth2 token sources, by the index a route's credential names; an unchanged one
    /// carries over with its cached token.
    token_sources: Vec<Arc<TokenSource>>,
    /// Rate-limit and in-flight state, kept across reloads (a reload is no way around a
    /// limit) unless `[limits] max_keys` changed.
    pub limits: Arc<LocalLimits>,
    /// `[state] backend = "redis"`: rate state the fleet shares (with `limits` as its
    /// fallback), on the connections kept across reloads that name the same server.
    pub shared_limits: Option<Arc<SharedLimits>>,
    /// `[state] backend = "redis"`: quota counts the fleet shares (in place of `quotas`).
    shared_quotas: Option<Arc<crate::state::redis::quotas::SharedQuotas>>,
    /// Quota counts: `[limits] quota_store`'s file, else the license store's; `None` when
    /// neither is configured (then no quota is configured either).
    pub quotas: Option<Arc<EmbeddedQuotas>>,
    /// `[limits] quota_store`'s file, kept across reloads that name the same file.
    quota_file: Option<Arc<EmbeddedQuotas>>,
    /// The HTTP/1.1 + HTTP/2 server settings every new connection is served with (shared
    /// with the connections, which outlive a reload; the rest of a generation does not).
    pub http: Arc<HttpBuilders>,
    /// `[tracing]`: the tracer requests start their spans with; `None`: tracing is off.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// The header names no client may send an upstream under this config.
    pub scrub: Arc<crate::upstream::ClientScrub>,
}

/// What a route runs with besides its policy.
#[derive(Debug)]
pub struct RouteParts {
    pub upstream: Arc<Upstream>,
    /// The OAuth2 token source the route's credential draws from.
    pub token: Option<Arc<TokenSource>>,
    /// The route's metric series, resolved on its first request.
    pub series: RouteSeries,
}

impl Generation {
    /// Build the running parts of `snapshot`. An upstream whose targets and timeouts are
    /// unchanged from `previous` keeps its pool (and its warm connections).
    pub fn new(
        snapshot: Snapshot,
        licensing: Option<Arc<Licensing>>,
        issuer: Option<Arc<Issuer>>,
        quota_file: Option<Arc<EmbeddedQuotas>>,
        shared_state: Option<Arc<RedisStore>>,
        telemetry: Option<Arc<crate::telemetry::Telemetry>>,
        previous: Option<&Generation>,
    ) -> Self {
        let warm: Vec<&Arc<Upstream>> = previous.map(|p| p.upstreams()).unwrap_or_default();
        // Routes naming one [[upstreams]] entry share one running upstream (one set of
        // pools, one health checker); an unchanged upstream carries over warm.
        let mut running: Vec<Arc<Upstream>> = Vec::new();
        let mut obtain = |spec: &crate::config::upstream::UpstreamSpec| {
            let shared = running.iter().find(|u| spec.named && u.same_as(spec));
            let upstream = match shared.or_else(|| warm.iter().copied().find(|u| u.same_as(spec))) {
                Some(u) => Arc::clone(u),
                None => {
                    let before = warm.iter().find(|u| u.name() == &spec.name);
                    let u = Arc::new(Upstream::new(spec, before.map(|u| &***u)));
                    crate::upstream::health::spawn(&u);
                    u
                }
            };
            running.push(Arc::clone(&upstream));
            upstream
        };
        let token_sources: Vec<Arc<TokenSource>> = snapshot
            .token_sources
            .iter()
            .map(|spec| {
                let endpoint = obtain(&spec.endpoint);
                let kept = previous.and_then(|p| {
                    p.token_sources
                        .iter()
                        .find(|t| t.spec() == spec && Arc::ptr_eq(t.endpoint(), &endpoint))
                });
                match kept {
                    Some(t) => Arc::clone(t),
                    None => Arc::new(TokenSource::new(spec.clone(), endpoint)),
                }
            })
            .collect();
        let routes = snapshot
            .upstreams
            .iter()
            .enumerate()
            .map(|(id, spec)| RouteParts {
                upstream: obtain(spec),
                token: snapshot
                    .route_token_source(id)
                    .and_then(|i| token_sources.get(i))
                    .cloned(),
                series: RouteSeries::default(),
            })
            .collect();
        let limits = match previous {
            Some(p) if p.limits.max_keys() == LocalLimits::rounded(snapshot.limit_keys) => {
                Arc::clone(&p.limits)
            }
            _ => Arc::new(LocalLimits::new(snapshot.limit_keys)),
        };
        let shared_quotas = shared_state.as_ref().map(|store| {
            Arc::new(crate::state::redis::quotas::SharedQuotas::new(Arc::clone(
                store,
            )))
        });
        let shared_limits =
            shared_state.map(|store| Arc::new(SharedLimits::new(store, Arc::clone(&limits))));
        let quotas = quota_file
            .clone()
            .or_else(|| licensing.as_ref().and_then(|l| l.quotas.clone()));
        Generation {
            http: Arc::new(http_builders(&snapshot.server)),
            scrub: Arc::new(crate::upstream::ClientScrub::new(&snapshot)),
            limits,
            shared_limits,
            shared_quotas,
            quotas,
            quota_file,
            snapshot: Arc::new(snapshot),
            licensing,
            issuer,
            enrollment: None,
            routes,
            token_sources,
            telemetry,
        }
    }

    /// This generation with the running enrollment (opened by the server, like the issuer).
    pub fn with_enrollment(
        mut self,
        enrollment: Option<Arc<crate::enrollment::Enrollment>>,
    ) -> Self {
        self.enrollment = enrollment;
        self
    }

    /// The same generation without its stores, for the end of a shutdown: the license and
    /// issuer files are closed at once (a restart in the same process opens them again),
    /// not whenever the last task holding the generation lets go.
    pub fn without_stores(&self) -> Self {
        Generation {
            snapshot: Arc::clone(&self.snapshot),
            licensing: None,
            issuer: None,
            enrollment: None,
            quotas: None,
            quota_file: None,
            routes: self
                .routes
                .iter()
                .map(|r| RouteParts {
                    upstream: Arc::clone(&r.upstream),
                    token: r.token.clone(),
                    series: RouteSeries::default(),
                })
                .collect(),
            token_sources: self.token_sources.clone(),
            limits: Arc::clone(&self.limits),
            shared_limits: self.shared_limits.clone(),
            shared_quotas: self.shared_quotas.clone(),
            http: Arc::clone(&self.http),
            telemetry: self.telemetry.clone(),
            scrub: Arc::clone(&self.scrub),
        }
    }

    /// Every running upstream once (routes may share one): the routes' and the OAuth2
    /// token endpoints'.
    pub fn upstreams(&self) -> Vec<&Arc<Upstream>> {
        let mut out: Vec<&Arc<Upstream>> = Vec::new();
        let all = self
            .routes
            .iter()
            .map(|r| &r.upstream)
            .chain(self.token_sources.iter().map(|t| t.endpoint()));
        for u in all {
            if !out.iter().any(|o| Arc::ptr_eq(o, u)) {
                out.push(u);
            }
        }
        out
    }

    /// Where this generation counts quotas: the fleet's store, else the quota file or the
    /// license store's; `None` when nothing can count them.
    pub fn quotas(&self) -> Option<crate::limits::Quotas<'_>> {
        match (&self.shared_quotas, &self.quotas) {
            (Some(shared), _) => Some(crate::limits::Quotas::Shared(&**shared)),
            (None, Some(local)) => Some(crate::limits::Quotas::Local(&**local)),
            (None, None) => None,
        }
    }

    /// Where this generation keeps rate state.
    pub fn limiter(&self) -> crate::limits::Limiter<'_> {
        match &self.shared_limits {
            Some(shared) => crate::limits::Limiter::Shared {
                rates: &**shared,
                in_flight: &*self.limits,
            },
            None => crate::limits::Limiter::Local(&*self.limits),
        }
    }

    /// The shared store, when the fleet shares state through Redis.
    pub fn shared_state(&self) -> Option<&Arc<RedisStore>> {
        self.shared_limits.as_ref().map(|s| s.store())
    }

    /// The running parts of `route`, a route of this generation's snapshot.
    pub fn route(&self, route: &Route) -> Option<&RouteParts> {
        self.routes.get(route.id)
    }
}

/// The Redis store of `snapshot`'s `[state]`: the running one when `previous` uses the same
/// settings (its connections stay warm), else set up now (it connects on first use).
pub fn open_shared_state(
    snapshot: &crate::config::Snapshot,
    previous: Option<&Generation>,
) -> Result<Option<Arc<RedisStore>>, StoreError> {
    let Some(settings) = &snapshot.shared_state else {
        return Ok(None);
    };
    if let Some(running) = previous.and_then(|p| p.shared_state())
        && running.settings() == settings
    {
        return Ok(Some(Arc::clone(running)));
    }
    let store = Arc::new(RedisStore::connect(settings.clone())?);
    store.watch();
    Ok(Some(store))
}

/// The tracer of `snapshot`'s `[tracing]`: the running one when `previous` runs the same
/// section, else started now (inside the runtime). The caller shuts a replaced one down.
pub fn open_telemetry(
    snapshot: &crate::config::Snapshot,
    previous: Option<&Generation>,
) -> Result<Option<Arc<crate::telemetry::Telemetry>>, crate::telemetry::TelemetryError> {
    let Some(settings) = &snapshot.tracing else {
        return Ok(None);
    };
    if let Some(running) = previous.and_then(|p| p.telemetry.as_ref())
        && running.settings() == settings
    {
        return Ok(Some(Arc::clone(running)));
    }
    Ok(Some(Arc::new(crate::telemetry::Telemetry::start(
        settings,
    )?)))
}

/// The `[limits] quota_store` file of `snapshot`: the running one when `previous` has it open
/// (redb allows one opener per file), else opened now. `now`: Unix seconds.
pub fn open_quota_file(
    snapshot: &crate::config::Snapshot,
    previous: Option<&Generation>,
    now: u64,
) -> Result<Option<Arc<EmbeddedQuotas>>, QuotaStoreError> {
    let Some(path) = &snapshot.quota_store else {
        return Ok(None);
    };
    // The fleet's Redis counts quotas; the file is not opened (instances on one machine
    // could not all open it).
    if snapshot.shared_state.is_some() {
        return Ok(None);
    }
    if let Some(running) = previous.and_then(|p| p.quota_file.as_ref())
        && running.path() == path
    {
        return Ok(Some(Arc::clone(running)));
    }
    Ok(Some(Arc::new(EmbeddedQuotas::open(
        path,
        snapshot.limit_keys,
        now,
    )?)))
}

/// The HTTP server settings for new connections, built once per config load: HTTP/2 when
/// ALPN chose `h2`, HTTP/1.1 otherwise.
///
/// Not hyper-util's `auto` builder: it sniffs the first 24 bytes for the HTTP/2 preface
/// even when ALPN has already said which protocol it is, and that 24-byte prefix makes
/// hyper's first read buffer grow from 8 to 16 KiB, held for the connection's life
/// (heaptrack, 1,000 idle connections). HTTP/2 over TLS needs ALPN (RFC 9113 3.2), so
/// ALPN alone decides.
pub struct HttpBuilders {
    pub(crate) h1: http1::Builder,
    pub(crate) h2: http2::Builder<TokioExecutor>,
}

pub fn http_builders(s: &crate::config::ServerSettings) -> HttpBuilders {
    let mut h1 = http1::Builder::new();
    // No timer, so no `header_read_timeout` of hyper's: the connection's own tick holds
    // heads (and idle keep-alive) to `header_read_timeout`, without a timer per request
    // (`server/h1.rs`). Slowloris: the whole head must arrive in time, however slowly.
    h1.max_buf_size(s.max_header_bytes)
        .max_headers(s.max_headers)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        // HAProxy's default; each stream a client stops reading holds h2's send buffer and an
        // upstream connection's read-ahead until `send_timeout`.
        .max_concurrent_streams(100)
        // Bounds the rapid-reset attack (CVE-2023-44487) on top of h2's own defaults.
        .max_pending_accept_reset_streams(50)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    HttpBuilders { h1, h2 }
}
