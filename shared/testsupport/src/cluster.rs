//! A JetStream cluster of `nats-server` nodes on loopback ports, from generated config files.

use crate::START_TIMEOUT;
use crate::process::{ServerProcess, free_port, jetstream_block, nats_server_binary};
use std::path::PathBuf;

/// One node's fixed ports and its process (if running).
struct Node {
    client_port: u16,
    process: Option<ServerProcess>,
}

/// `n` `nats-server` nodes forming one JetStream cluster (`cluster.name: roster-test`), each
/// with its own store directory. Streams created with `num_replicas: 3` are replicated on
/// three of them. Killed (and the directory removed) when dropped.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `n` nodes (3 for replicas 3) and waits until each is ready and knows the
    /// JetStream metadata leader. Panics if `nats-server` is missing or the cluster does not
    /// form.
    pub fn start(n: usize) -> NatsCluster {
        assert!(n >= 1, "a cluster needs at least one node");
        let binary = nats_server_binary();
        let dir = tempfile::Builder::new()
            .prefix("roster-nats-cluster-")
            .tempdir()
            .expect("create a temporary directory for the cluster");
        let client_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        for i in 0..n {
            let store = dir.path().join(format!("n{i}")).join("store");
            std::fs::create_dir_all(&store).expect("create a node store directory");
            let text = format!(
                "server_name: \"n{i}\"\n\
                 listen: \"127.0.0.1:{client}\"\n\
                 {jetstream}\
                 cluster {{\n  name: \"roster-test\"\n  listen: \"127.0.0.1:{route}\"\n  \
                 routes: [{routes}]\n}}\n",
                client = client_ports[i],
                route = route_ports[i],
                jetstream = jetstream_block(&store),
            );
            std::fs::write(dir.path().join(format!("n{i}.conf")), text)
                .expect("write a node config");
        }
        let mut cluster = NatsCluster {
            dir,
            nodes: client_ports
                .into_iter()
                .map(|client_port| Node {
                    client_port,
                    process: None,
                })
                .collect(),
        };
        for i in 0..n {
            cluster.spawn(i, &binary);
        }
        for i in 0..n {
            cluster.wait_for_meta_leader(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize, binary: &std::path::Path) {
        let conf = self.dir.path().join(format!("n{i}.conf"));
        let log = self.dir.path().join(format!("n{i}.log"));
        let process = ServerProcess::spawn(binary, &conf, &log, false);
        // Only the client port here: a node waits for its peers before it says it is ready.
        process.wait_ready(self.nodes[i].client_port, START_TIMEOUT, |_| true);
        self.nodes[i].process = Some(process);
    }

    fn wait_for_meta_leader(&self, i: usize) {
        let Some(process) = &self.nodes[i].process else {
            return;
        };
        if !process.wait_log(START_TIMEOUT, |log| log.contains("metadata leader")) {
            panic!(
                "node n{i} saw no JetStream metadata leader after {START_TIMEOUT:?}; log:\n{}",
                process.log_text()
            );
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never: `start` needs one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's client URL, comma-separated (what a client's server list takes).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Node `i`'s store directory.
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}")).join("store")
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].process.take() {
            p.kill();
        }
    }

    /// Stops node `i` cleanly (if it runs) and starts it again with the same ports and store.
    pub fn restart(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].process.take() {
            p.terminate();
        }
        self.spawn(i, &nats_server_binary());
    }
}
