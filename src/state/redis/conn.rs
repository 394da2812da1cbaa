//! The connections behind a [`super::RedisStore`], for one server or a Redis Cluster.
//!
//! - The request path's calls (rate limits, quotas, throttles, pings, publishing) go over
//!   multiplexed async connections: a few `ConnectionManager`s to one server, or one
//!   cluster connection that routes each command to the node owning its key's slot (every
//!   such call names one key, or keys under one hash tag).
//! - The control plane (the issuer's transactions, the licenses) runs on synchronous
//!   connections on the blocking pool, because `WATCH` belongs to a connection and cannot
//!   share a multiplexed one. All its keys carry the hash tag [`CONTROL_TAG`], so in a
//!   Cluster they live on one node; the synchronous connections go to that node, found by
//!   the `MOVED` redirect of a probe and found again when a call is redirected.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::{RedisSettings, StoreError};

/// The hash tag of every control-plane key (issuer, licenses, the token endpoint's
/// throttles): one slot, so a transaction's keys are on one node.
pub const CONTROL_TAG: &str = "{iss}";

/// One multiplexed async connection, to a server or to a cluster.
#[derive(Clone)]
pub enum AnyConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for AnyConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            AnyConn::Single(c) => c.req_packed_command(cmd),
            AnyConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            AnyConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            AnyConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConn::Single(c) => c.get_db(),
            AnyConn::Cluster(c) => c.get_db(),
        }
    }
}

/// The async side.
pub enum Pool {
    Single(Box<[ConnectionManager]>),
    /// Connected at the first call (a gateway starts while the cluster is down).
    Cluster(Box<ClusterPool>),
}

/// A Cluster's client and its one multiplexed connection (routing per key slot).
pub struct ClusterPool {
    client: redis::cluster::ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl Pool {
    pub fn open(settings: &RedisSettings, client: &redis::Client) -> Result<Pool, StoreError> {
        if settings.cluster {
            let mut b = redis::cluster::ClusterClientBuilder::new(vec![
                client.get_connection_info().clone(),
            ])
            .connection_timeout(settings.connect_timeout)
            .response_timeout(settings.command_timeout)
            .retries(1);
            if let Some(u) = &settings.username {
                b = b.username(u);
            }
            if let Some(p) = &settings.password {
                b = b.password(p.as_str());
            }
            if let Some(ca) = &settings.ca {
                b = b.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                });
            }
            let client = b.build().map_err(|e| StoreError::Client(e.to_string()))?;
            return Ok(Pool::Cluster(Box::new(ClusterPool {
                client,
                conn: tokio::sync::OnceCell::new(),
            })));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.command_timeout))
            // The gate does the waiting between attempts; the manager retries once.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conns = (0..settings.pool_size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Client(e.to_string()))?;
        Ok(Pool::Single(conns.into()))
    }

    /// A handle on a multiplexed connection; `n` spreads callers over a server's pool.
    pub async fn get(&self, n: usize) -> redis::RedisResult<AnyConn> {
        match self {
            Pool::Single(conns) => Ok(AnyConn::Single(conns[n % conns.len()].clone())),
            Pool::Cluster(p) => p
                .conn
                .get_or_try_init(|| p.client.get_async_connection())
                .await
                .map(|c| AnyConn::Cluster(c.clone())),
        }
    }
}

/// A client for `settings` at `url`, with its user, password and roots.
pub fn client(settings: &RedisSettings, url: &str) -> Result<redis::Client, StoreError> {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()
        .map_err(|e| StoreError::Url(e.to_string()))?;
    let mut redis_info = info.redis_settings().clone();
    if let Some(u) = &settings.username {
        redis_info = redis_info.set_username(u);
    }
    if let Some(p) = &settings.password {
        redis_info = redis_info.set_password(p.as_str());
    }
    let info = info.set_redis_settings(redis_info);
    match &settings.ca {
        Some(ca) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        None => redis::Client::open(info),
    }
    .map_err(|e| StoreError::Client(e.to_string()))
}

/// Where the control plane's synchronous connections go.
pub struct ControlNode {
    /// In a Cluster, the node owning [`CONTROL_TAG`]'s slot (`host:port`) once found.
    owner: Mutex<Option<String>>,
}

impl ControlNode {
    pub fn new() -> ControlNode {
        ControlNode {
            owner: Mutex::new(None),
        }
    }

    /// A new synchronous connection to the node that holds the control plane: the server,
    /// or in a Cluster the owner of the control slot (asked of the seed when not known).
    pub fn open(
        &self,
        settings: &RedisSettings,
        seed: &redis::Client,
    ) -> redis::RedisResult<redis::Connection> {
        let open = |client: &redis::Client| -> redis::RedisResult<redis::Connection> {
            let c = client.get_connection_with_timeout(settings.connect_timeout)?;
            c.set_read_timeout(Some(settings.command_timeout))?;
            c.set_write_timeout(Some(settings.command_timeout))?;
            Ok(c)
        };
        if !settings.cluster {
            return open(seed);
        }
        let known = self.owner.lock().ok().and_then(|o| o.clone());
        let mut conn = match &known {
            Some(addr) => open(&node_client(settings, addr)?)?,
            None => open(seed)?,
        };
        let probe = format!("{}{CONTROL_TAG}", settings.key_prefix);
        match redis::cmd("EXISTS").arg(&probe).query::<i64>(&mut conn) {
            Ok(_) => {
                if known.is_none() {
                    self.set(Some(seed_addr(seed)));
                }
                Ok(conn)
            }
            Err(e) => match e.redirect_node() {
                Some((addr, _)) => {
                    let addr = addr.to_owned();
                    let conn = open(&node_client(settings, &addr)?)?;
                    self.set(Some(addr));
                    Ok(conn)
                }
                None => Err(e),
            },
        }
    }

    /// A call failed with `e`: a redirect means the slot moved, so the owner is asked again.
    pub fn failed(&self, e: &redis::RedisError) {
        if e.redirect_node().is_some() {
            self.set(None);
        }
    }

    fn set(&self, owner: Option<String>) {
        if let Ok(mut o) = self.owner.lock() {
            *o = owner;
        }
    }
}

fn seed_addr(seed: &redis::Client) -> String {
    match seed.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(h, p)
        | redis::ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            format!("{h}:{p}")
        }
        other => other.to_string(),
    }
}

/// A client for the cluster node at `addr` (`host:port`), with the seed URL's scheme.
fn node_client(settings: &RedisSettings, addr: &str) -> redis::RedisResult<redis::Client> {
    let scheme = if settings.url.starts_with("rediss://") {
        "rediss"
    } else {
        "redis"
    };
    client(settings, &format!("{scheme}://{addr}")).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cluster node",
            e.to_string(),
        ))
    })
}
