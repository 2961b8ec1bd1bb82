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
