//! `raftmq dev`: a router and a three-node group in one process on 127.0.0.1, for trying raftmq
//! locally. The nodes register with the router; clients may use the router or any node.
use std::path::PathBuf;

use anyhow::Context;

use crate::config::ServerConfig;

pub const DEV_CLIENT_PORTS: [u16; 3] = [8081, 8082, 8083];
pub const DEV_PEER_PORTS: [u16; 3] = [9091, 9092, 9093];
pub const DEV_ROUTER: &str = "127.0.0.1:8080";

pub async fn run(data_dir: PathBuf, flush: raftmq_store::FlushPolicy) -> anyhow::Result<()> {
    let peers: std::collections::BTreeMap<u64, String> = (1..=3u64).map(|id| (id, format!("127.0.0.1:{}", DEV_PEER_PORTS[id as usize - 1]))).collect();
    let router_args = crate::router::RouterArgs { listen: DEV_ROUTER.parse()?, node_timeout_ms: crate::router::NODE_TIMEOUT_MS_DEFAULT };
    let router = crate::router::start(router_args).await.context("starting the dev router")?;
    let mut servers = Vec::new();
    for id in 1..=3u64 {
        let listen = format!("127.0.0.1:{}", DEV_CLIENT_PORTS[id as usize - 1]).parse()?;
        let config = ServerConfig {
            node_id: id,
            group: "g1".into(),
            data_dir: data_dir.join(format!("node-{id}")),
            listen,
            advertise: format!("127.0.0.1:{}", DEV_CLIENT_PORTS[id as usize - 1]),
            peer_listen: format!("127.0.0.1:{}", DEV_PEER_PORTS[id as usize - 1]).parse()?,
            peers: peers.clone(),
            flush,
            max_body_bytes: crate::limits::BODY_BYTES_DEFAULT,
            segment_size_bytes: raftmq_store::limits::SEGMENT_SIZE_BYTES_DEFAULT,
            page_cache_tail_bytes: Some(raftmq_store::limits::PAGE_CACHE_TAIL_BYTES_DEFAULT),
            snapshot_interval_entries: crate::config::SNAPSHOT_INTERVAL_ENTRIES_DEFAULT,
            retention: raftmq_store::RetentionPolicy {
                max_age: Some(std::time::Duration::from_secs(3600 * crate::config::RETENTION_HOURS_DEFAULT)),
                max_total_bytes: None,
            },
            auto_create_groups: true,
            routers: vec![DEV_ROUTER.to_string()],
        };
        servers.push(crate::server::start(config).await.with_context(|| format!("starting dev node {id}"))?);
    }
    tracing::info!(
        "raftmq dev is up: a router on {DEV_ROUTER} and a three-node group (flush={flush:?}) with data under {}. \
         Point a RocketMQ 5 client at 127.0.0.1:8081 (or 127.0.0.1:8081;127.0.0.1:8082;127.0.0.1:8083, or the \
         router {DEV_ROUTER}). Create a topic first: \
         `raftmq topic create --endpoint 127.0.0.1:8081 --topic orders`. Ctrl-C stops.",
        data_dir.display()
    );
    tokio::signal::ctrl_c().await?;
    for server in servers {
        server.stop().await;
    }
    router.stop().await;
    Ok(())
}
