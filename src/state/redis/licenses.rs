//! Activated machine licenses in Redis, for a fleet: one hash `{prefix}{iss}licenses` of
//! `id -> "activated_at:revoked_at:text"` (`revoked_at` is `-` while the license stands).
//! Each call is one atomic step on the server: `HSETNX` for an activation (of two instances
//! activating one id, one wins), a Lua script for a revocation (the first revocation time
//! stays). Instances learn of a change from the fleet channel and re-read the hash.

use std::sync::Arc;

use super::RedisStore;
use crate::state::licenses::{LicenseStore, StoreError, StoredLicense};

/// KEYS[1]: the hash; ARGV: id, at. Returns the stored value after the revocation, or nil.
const REVOKE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local activated, revoked, text = string.match(v, '^(%d+):([%d%-]+):(.*)$')
if not activated then return v end
if revoked == '-' then
  v = activated .. ':' .. ARGV[2] .. ':' .. text
  redis.call('HSET', KEYS[1], ARGV[1], v)
end
return v
";

/// Announced on the fleet channel after an activation or revocation.
pub const CHANGED: &str = "licenses";

/// The licenses a fleet shares.
pub struct RedisLicenses {
    store: Arc<RedisStore>,
    key: String,
    revoke: redis::Script,
}

impl std::fmt::Debug for RedisLicenses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LicenseStore({})", self.location())
    }
}

impl RedisLicenses {
    pub fn new(store: Arc<RedisStore>) -> RedisLicenses {
        // Under the control tag: in a Cluster, on the node the synchronous connections reach.
        let key = format!(
            "{}{}licenses",
            store.settings().key_prefix,
            super::CONTROL_TAG
        );
        RedisLicenses {
            store,
            key,
            revoke: redis::Script::new(REVOKE),
        }
    }

    fn location(&self) -> String {
        format!("in Redis (key {})", self.key)
    }

    fn call<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let unavailable = |what| StoreError::Unavailable {
            location: self.location(),
            what,
        };
        let started = crate::clock::mono_at(std::time::Instant::now());
        let mut conn = self.store.sync_connection().map_err(unavailable)?;
        match f(&mut conn) {
            Ok(v) => {
                self.store.sync_succeeded(conn, started);
                Ok(v)
            }
            Err(e) => Err(unavailable(self.store.sync_failed(&e))),
        }
    }

    fn corrupt(&self, id: &str) -> StoreError {
        StoreError::Corrupt {
            location: self.location(),
            what: format!("license \"{id:.64}\": not activated_at:revoked_at:text"),
        }
    }
}

fn encode(l: &StoredLicense) -> String {
    let revoked = l
        .revoked_at
        .map_or_else(|| "-".to_owned(), |t| t.to_string());
    format!("{}:{revoked}:{}", l.activated_at, l.text)
}

fn decode(id: &str, value: &str) -> Option<StoredLicense> {
    let mut parts = value.splitn(3, ':');
    let activated_at = parts.next()?.parse().ok()?;
    let revoked_at = match parts.next()? {
        "-" => None,
        t => Some(t.parse().ok()?),
    };
    Some(StoredLicense {
        id: id.to_owned(),
        text: parts.next()?.to_owned(),
        activated_at,
        revoked_at,
    })
}

impl LicenseStore for RedisLicenses {
    fn all(&self) -> Result<Vec<StoredLicense>, StoreError> {
        let rows: Vec<(String, String)> = self.call(|c| {
            redis::cmd("HGETALL")
                .arg(&self.key)
                .query::<Vec<(String, String)>>(c)
        })?;
        rows.iter()
            .map(|(id, v)| decode(id, v).ok_or_else(|| self.corrupt(id)))
            .collect()
    }

    fn insert_new(&self, license: &StoredLicense) -> Result<bool, StoreError> {
        self.call(|c| {
            redis::cmd("HSETNX")
                .arg(&self.key)
                .arg(&license.id)
                .arg(encode(license))
                .query::<bool>(c)
        })
    }

    fn revoke(&self, id: &str, at: u64) -> Result<Option<StoredLicense>, StoreError> {
        let v: Option<String> = self.call(|c| {
            self.revoke
                .key(&self.key)
                .arg(id)
                .arg(at)
                .invoke::<Option<String>>(c)
        })?;
        v.map(|v| decode(id, &v).ok_or_else(|| self.corrupt(id)))
            .transpose()
    }

    fn changed(&self) {
        self.store.announce(CHANGED.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_license_reads_back_as_written_with_colons_in_its_text() {
        for revoked_at in [None, Some(1_700_000_500)] {
            let l = StoredLicense {
                id: "lic-1".into(),
                text: "PCL1:abc:def=".into(),
                activated_at: 1_700_000_000,
                revoked_at,
            };
            assert_eq!(decode("lic-1", &encode(&l)), Some(l));
        }
        assert_eq!(decode("x", "garbage"), None);
        assert_eq!(decode("x", "1:zz:text"), None);
    }
}
