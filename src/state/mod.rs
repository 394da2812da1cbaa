//! Floor 2: state the gateway keeps across requests and restarts, behind one type per kind:
//! machine licenses (their book, activations and revocations) and the token issuer's
//! clients, keys, refresh families and revocations, each in an embedded redb file; rate-limit
//! state in memory and quota counts written behind to redb. `redis/` is the fleet's backend:
//! state several instances share through one Redis server (`[state] backend = "redis"`).

pub(crate) mod db;
pub mod enrollment;
pub mod enrollment_certs;
pub(crate) mod issuer;
pub mod licenses;
pub mod limits;
pub mod quotas;
pub mod redis;
pub mod transfer;
