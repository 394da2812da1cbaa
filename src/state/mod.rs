//! Floor 2: state the gateway keeps across requests and restarts, behind one type per kind:
//! machine licenses (their book, activations and revocations) in an embedded redb file.

pub(crate) mod db;
pub mod licenses;
