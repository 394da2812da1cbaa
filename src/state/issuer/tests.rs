//! The redb store: privacy, one opener, atomic transactions, pruning.

use crate::state::issuer::{
    ClientRecord, Embedded, FamilyRecord, IssuerState, StoreError, TxError,
};

fn client(id: &str) -> ClientRecord {
    ClientRecord {
        id: id.to_owned(),
        secret_hash: None,
        scopes: vec!["a".into()],
        cert_pins: Vec::new(),
        access_token_ttl: None,
        disabled: false,
        created_at: 1,
        secret_rotated_at: None,
    }
}

#[test]
fn the_store_is_created_private_and_keeps_what_was_committed_across_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("issuer.redb");
    {
        let store: Box<dyn IssuerState> = Box::new(Embedded::open(&path).expect("open"));
        store
            .write(|tx| tx.put_client(&client("erp")))
            .expect("put");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    let store: Box<dyn IssuerState> = Box::new(Embedded::open(&path).expect("reopen"));
    let got = store.read(|rx| rx.client("erp")).expect("read");
    assert_eq!(got, Some(client("erp")));
}

#[test]
fn a_second_opener_is_told_the_store_is_in_use() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("issuer.redb");
    let _first: Box<dyn IssuerState> = Box::new(Embedded::open(&path).expect("open"));
    let e = Embedded::open(&path).expect_err("second open");
    assert!(matches!(e, StoreError::InUse { .. }), "{e}");
}

#[test]
fn a_failed_transaction_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store: Box<dyn IssuerState> =
        Box::new(Embedded::open(&dir.path().join("s.redb")).expect("open"));
    let r: Result<(), _> = store.write(|tx| {
        tx.put_client(&client("half"))?;
        Err(TxError::Corrupt("stop".into()))
    });
    assert!(r.is_err());
    assert_eq!(store.read(|rx| rx.client("half")).expect("read"), None);
}

#[test]
fn pruning_drops_expired_families_their_hashes_and_old_revocations() {
    let dir = tempfile::tempdir().expect("dir");
    let store: Box<dyn IssuerState> =
        Box::new(Embedded::open(&dir.path().join("s.redb")).expect("open"));
    let fam = |id: &str, expires_at| FamilyRecord {
        id: id.to_owned(),
        client_id: "c".into(),
        scopes: Vec::new(),
        created_at: 0,
        expires_at,
        last_used: 0,
        current: String::new(),
        generation: 0,
        revoked_at: None,
        access: Vec::new(),
    };
    store
        .write(|tx| {
            tx.put_family(&fam("old", 100))?;
            tx.put_family(&fam("live", 1000))?;
            tx.put_refresh(&[1; 32], "old")?;
            tx.put_refresh(&[2; 32], "live")?;
            tx.revoke_jti("gone", 100)?;
            tx.revoke_jti("kept", 1000)
        })
        .expect("seed");
    let gone = store.write(|tx| tx.prune(500, 5)).expect("prune");
    assert_eq!(gone, 3);
    store
        .read(|rx| {
            assert!(rx.family("old")?.is_none());
            assert!(rx.family("live")?.is_some());
            assert!(rx.family_of(&[1; 32])?.is_none());
            assert_eq!(rx.family_of(&[2; 32])?.as_deref(), Some("live"));
            assert_eq!(rx.revoked()?, vec![("kept".to_owned(), 1000)]);
            Ok(())
        })
        .expect("read");
}
