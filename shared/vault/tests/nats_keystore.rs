//! The JetStream key store against a real nats-server: keys persist across connections, a
//! destroyed key's bytes are in no file under the server's store directory, and every
//! connection forgets a destroyed key.

use roster_testsupport::NatsServer;
use roster_vault::{KeyId, KeyStore, NatsKeyStore, NatsKeyStoreOptions};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn options(test: &str) -> NatsKeyStoreOptions {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    NatsKeyStoreOptions {
        bucket: format!("keys_{}_{n}_{test}", std::process::id()),
        ..NatsKeyStoreOptions::default()
    }
}

async fn connect(url: &str, options: &NatsKeyStoreOptions) -> NatsKeyStore {
    NatsKeyStore::connect(url, options.clone())
        .await
        .expect("connect")
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_key_bytes_leave_every_file_of_the_server() {
    let mut server = NatsServer::start();
    let opts = options("erase");
    let store = connect(&server.url(), &opts).await;
    let made = store.create(3).await.expect("create");
    let (gone, gone_key) = made[1].clone();
    drop(store);
    // A clean restart flushes everything the server holds in memory to its files.
    server.restart();
    let store_dir = server.store_dir();
    for (id, key) in &made {
        assert!(
            !files_containing(&store_dir, key.as_bytes()).is_empty(),
            "key {id} is on disk before destroy (else this test could not fail)"
        );
    }

    let store = connect(&server.url(), &opts).await;
    assert_eq!(store.len(), 3);
    store.destroy(&[gone]).await.expect("destroy");
    assert!(store.get(gone).await.expect("get").is_none());
    // Right after destroy returns, and again after the server has flushed and restarted.
    let found = files_containing(&store_dir, gone_key.as_bytes());
    assert!(found.is_empty(), "destroyed key bytes still in {found:?}");
    drop(store);
    server.restart();
    let found = files_containing(&store_dir, gone_key.as_bytes());
    assert!(
        found.is_empty(),
        "destroyed key bytes in {found:?} after restart"
    );
    for (id, key) in [&made[0], &made[2]] {
        assert!(
            !files_containing(&store_dir, key.as_bytes()).is_empty(),
            "surviving key {id} is still on disk"
        );
    }

    let store = connect(&server.url(), &opts).await;
    assert_eq!(store.len(), 2);
    assert!(store.get(gone).await.expect("get").is_none());
    for (id, key) in [&made[0], &made[2]] {
        let got = store.get(*id).await.expect("get").expect("survives");
        assert_eq!(got.as_bytes(), key.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_new_connection() {
    let server = NatsServer::shared();
    let opts = options("survive");
    let store = connect(&server.url(), &opts).await;
    assert!(store.is_empty());
    let made = store.create(5).await.expect("create");
    store.destroy(&[made[4].0]).await.expect("destroy");
    store
        .destroy(&[KeyId::new()])
        .await
        .expect("unknown ids are ignored");
    assert_eq!(store.len(), 4);
    drop(store);

    let again = connect(&server.url(), &opts).await;
    assert_eq!(again.len(), 4);
    for (id, key) in &made[..4] {
        let got = again.get(*id).await.expect("get").expect("live");
        assert_eq!(got.as_bytes(), key.as_bytes());
    }
    assert!(again.get(made[4].0).await.expect("get").is_none());
    assert!(again.get(KeyId::new()).await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_sees_creates_and_destroys() {
    let server = NatsServer::shared();
    let opts = options("shared");
    let a = Arc::new(connect(&server.url(), &opts).await);
    let b = connect(&server.url(), &opts).await;

    // Concurrent creates on one connection: all distinct, all stored.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.create(4).await.expect("create") })
        })
        .collect();
    let mut made = Vec::new();
    for t in tasks {
        made.extend(t.await.expect("task"));
    }
    let mut ids: Vec<_> = made.iter().map(|(id, _)| *id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 64);

    // The other connection reads them (from its mirror, or the bucket if not yet mirrored).
    for (id, key) in &made {
        let got = b.get(*id).await.expect("get").expect("visible to b");
        assert_eq!(got.as_bytes(), key.as_bytes());
    }
    // A destroy on one connection is seen by the other promptly.
    let victim = made[0].0;
    a.destroy(&[victim]).await.expect("destroy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.get(victim).await.expect("get").is_some() {
        assert!(
            Instant::now() < deadline,
            "b still returns the destroyed key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.len() != 63 {
        assert!(Instant::now() < deadline, "b's count is {}", b.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
