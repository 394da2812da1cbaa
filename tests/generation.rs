//! Proves a reload is one store: while reloads move the license store to a new file again and
//! again, every generation a request can load pairs its config snapshot with the licensing
//! service opened for that snapshot's `[licenses]` (never the previous one's), and requests
//! keep being served throughout.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use portcullis::license::keys::keygen;
use support::*;

fn config(up: &Upstream, key: &str, store: &str) -> String {
    format!(
        "{}[licenses]\ntrusted_keys = [\"{key}\"]\nstore = \"{store}\"\n\n{}{}",
        server("watch_config = false"),
        listener("public", ""),
        route("open", "/", &[&up.url()], ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_sees_the_licensing_of_another_generation_than_its_snapshot() {
    let pki = Pki::generate();
    let files = keygen(pki.dir(), "lic").expect("keygen");
    let key = files.public.display().to_string();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &config(&up, &key, "store-0.redb")).await;

    // A reader that loads the live generation as a request does, as fast as it can.
    let shared = gw.shared();
    let done = Arc::new(AtomicBool::new(false));
    let loads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (done, loads) = (done.clone(), loads.clone());
        std::thread::spawn(move || {
            let mut mismatches = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let g = shared.generation.load();
                let configured = g.snapshot.licenses.as_ref().map(|l| l.store.clone());
                let running = g.licensing.as_ref().map(|l| l.store.clone());
                if configured != running {
                    mismatches.push((configured, running));
                }
                loads.fetch_add(1, Ordering::Relaxed);
            }
            mismatches
        })
    };

    // Each reload moves the store to a new file: a new service is opened for it.
    let mut h1 = connect_h1(&pki, gw.addr()).await;
    for i in 1..=20 {
        write_config(pki.dir(), &config(&up, &key, &format!("store-{i}.redb")));
        gw.reload().await.expect("reload");
        h1.call(get("/x")).await.expect("served").echo();
    }
    done.store(true, Ordering::Relaxed);
    let mismatches = reader.join().expect("reader");
    assert!(
        mismatches.is_empty(),
        "a generation paired a snapshot with another's licensing: {mismatches:?}"
    );
    assert!(loads.load(Ordering::Relaxed) > 20, "the reader barely ran");
    let g = gw.shared().generation.load();
    let store = g.licensing.as_ref().map(|l| l.store.clone());
    assert_eq!(store, Some(pki.dir().join("store-20.redb")));
}
