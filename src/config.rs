//! Server configuration: one TOML file, every key also a flag and a RAFTMQ_* env variable.
//! Precedence: flag or env > TOML file > default.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

use raftmq_store::FlushPolicy;

#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerArgs {
    /// TOML file with any of the keys below (kebab-case, e.g. node-id = 1).
    #[arg(long, env = "RAFTMQ_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id within its group (1, 2, 3, ...).
    #[arg(long, env = "RAFTMQ_NODE_ID")]
    pub node_id: Option<u64>,
    /// The broker group (one Raft group) this node belongs to.
    #[arg(long, env = "RAFTMQ_GROUP")]
    pub group: Option<String>,
    #[arg(long, env = "RAFTMQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Client gRPC address to listen on (apache.rocketmq.v2 and admin).
    #[arg(long, env = "RAFTMQ_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Client address advertised in routes (default: --listen).
    #[arg(long, env = "RAFTMQ_ADVERTISE")]
    pub advertise: Option<String>,
    /// Peer (Raft) gRPC address to listen on.
    #[arg(long, env = "RAFTMQ_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// Every member's peer address: 1=host:port,2=host:port,3=host:port
    #[arg(long, env = "RAFTMQ_PEERS")]
    pub peers: Option<String>,
    /// sync: ack after a majority fsynced (default); async: ack after a majority wrote to the page cache.
    #[arg(long, env = "RAFTMQ_FLUSH", value_parser = ["sync", "async"])]
    pub flush: Option<String>,
    /// Largest message body in bytes (default 4 MiB).
    #[arg(long, env = "RAFTMQ_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Commitlog segment size in bytes (default 1 GiB).
    #[arg(long, env = "RAFTMQ_SEGMENT_SIZE_BYTES")]
    pub segment_size_bytes: Option<u64>,
    /// How much of the end of the commitlog stays in the page cache (default 268435456, 256 MiB;
    /// older bytes are dropped from it once synced); 0 leaves the page cache to the kernel.
    #[arg(long, env = "RAFTMQ_PAGE_CACHE_TAIL_BYTES")]
    pub page_cache_tail_bytes: Option<u64>,
    /// Build a Raft snapshot every this many entries (default 10000); the Raft log is purged up to it.
    #[arg(long, env = "RAFTMQ_SNAPSHOT_INTERVAL_ENTRIES")]
    pub snapshot_interval_entries: Option<u64>,
    /// Delete purged commitlog segments older than this many hours (default 72, like RocketMQ).
    #[arg(long, env = "RAFTMQ_RETENTION_HOURS")]
    pub retention_hours: Option<u64>,
    /// Delete the oldest purged segments while the commitlog is larger than this (default: no limit).
    #[arg(long, env = "RAFTMQ_RETENTION_BYTES")]
    pub retention_bytes: Option<u64>,
    /// Routers to register with and take merged routes from: host:port,host:port
    #[arg(long, env = "RAFTMQ_ROUTERS")]
    pub routers: Option<String>,
    /// Create a consumer group on its first receive or offset commit (default true); with false,
    /// groups must be created with `raftmq group create` and unknown ones get CONSUMER_GROUP_NOT_FOUND.
    #[arg(long, env = "RAFTMQ_AUTO_CREATE_GROUPS")]
    pub auto_create_groups: Option<bool>,
}

pub const SNAPSHOT_INTERVAL_ENTRIES_DEFAULT: u64 = 10_000;
pub const RETENTION_HOURS_DEFAULT: u64 = 72;

/// A complete, validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node_id: u64,
    pub group: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise: String,
    pub peer_listen: SocketAddr,
    pub peers: BTreeMap<u64, String>,
    pub flush: FlushPolicy,
    pub max_body_bytes: usize,
    pub segment_size_bytes: u64,
    /// None: the kernel decides what stays cached.
    pub page_cache_tail_bytes: Option<u64>,
    pub snapshot_interval_entries: u64,
    pub retention: raftmq_store::RetentionPolicy,
    pub auto_create_groups: bool,
    /// Routers this node registers with (none: the node serves its own group's routes only).
    pub routers: Vec<String>,
}

/// Most routers one node registers with.
pub const ROUTERS_MAX: usize = 16;

pub fn parse_peers(text: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("peer {part:?} is not id=host:port (example: 1=127.0.0.1:9091)"))?;
        let id: u64 = id.trim().parse().with_context(|| format!("peer id {id:?} is not a number"))?;
        if id == 0 {
            bail!("peer id 0 is reserved; number nodes from 1");
        }
        let addr = addr.trim();
        if addr.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
            bail!("peer address {addr:?} is not host:port");
        }
        if peers.insert(id, addr.to_string()).is_some() {
            bail!("peer id {id} is listed twice");
        }
    }
    if peers.is_empty() {
        bail!("--peers lists no peers (example: 1=127.0.0.1:9091,2=127.0.0.1:9092,3=127.0.0.1:9093)");
    }
    Ok(peers)
}

pub fn parse_routers(text: &str) -> anyhow::Result<Vec<String>> {
    let mut routers: Vec<String> = Vec::new();
    for router in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if !raftmq_cluster::registry::valid_endpoint(router) {
            bail!("router address {router:?} is not host:port (example: --routers 10.0.0.5:8080,10.0.0.6:8080)");
        }
        if routers.iter().any(|r| r == router) {
            bail!("router {router} is listed twice in --routers");
        }
        routers.push(router.to_string());
    }
    if routers.is_empty() {
        bail!("--routers lists no routers; give host:port,host:port or leave it out");
    }
    if routers.len() > ROUTERS_MAX {
        bail!("--routers lists {} routers; at most {ROUTERS_MAX}", routers.len());
    }
    Ok(routers)
}

pub fn parse_flush(text: &str) -> anyhow::Result<FlushPolicy> {
    match text {
        "sync" => Ok(FlushPolicy::Sync),
        "async" => Ok(FlushPolicy::Async),
        other => bail!("flush policy {other:?} is not sync or async"),
    }
}

impl ServerArgs {
    /// Fills unset fields from the TOML file, then checks that everything needed is there.
    pub fn resolve(self) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<ServerArgs>(&text).with_context(|| format!("config file {} is invalid", path.display()))?
            }
            None => ServerArgs::default(),
        };
        macro_rules! pick {
            ($field:ident) => {
                self.$field.clone().or(file.$field.clone())
            };
        }
        let need = |name: &str| format!("--{name} is required (or `{name}` in the TOML file, or RAFTMQ_{})", name.to_uppercase().replace('-', "_"));
        let node_id = pick!(node_id).with_context(|| need("node-id"))?;
        let listen = pick!(listen).with_context(|| need("listen"))?;
        let peers = parse_peers(&pick!(peers).with_context(|| need("peers"))?)?;
        if !peers.contains_key(&node_id) {
            bail!("--peers does not list this node's id {node_id}; add {node_id}=host:port to --peers or fix --node-id");
        }
        let peer_listen = match pick!(peer_listen) {
            Some(addr) => addr,
            None => peers[&node_id].parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}; it defaults to this node's --peers address {:?}, which is not an ip:port to listen on",
                    need("peer-listen"),
                    peers[&node_id]
                )
            })?,
        };
        let max_body_bytes = pick!(max_body_bytes).unwrap_or(crate::limits::BODY_BYTES_DEFAULT);
        if max_body_bytes == 0 || max_body_bytes > crate::limits::BODY_BYTES_MAX {
            bail!("--max-body-bytes {max_body_bytes} is out of range; use 1 to {} (16 MiB)", crate::limits::BODY_BYTES_MAX);
        }
        let segment_size_bytes = pick!(segment_size_bytes).unwrap_or(raftmq_store::limits::SEGMENT_SIZE_BYTES_DEFAULT);
        // A maximal batch is one record, and a record never spans segments.
        let segment_size_bytes_min = (crate::limits::RECORD_PAYLOAD_BYTES_MAX as u64) * 5 / 4;
        if segment_size_bytes < segment_size_bytes_min {
            bail!("--segment-size-bytes {segment_size_bytes} is too small; use at least {segment_size_bytes_min} (a maximal batch must fit one segment)");
        }
        Ok(ServerConfig {
            node_id,
            group: pick!(group).unwrap_or_else(|| "g1".into()),
            data_dir: pick!(data_dir).unwrap_or_else(|| PathBuf::from(format!("raftmq-data/node-{node_id}"))),
            advertise: pick!(advertise).unwrap_or_else(|| listen.to_string()),
            listen,
            peer_listen,
            peers,
            flush: parse_flush(pick!(flush).as_deref().unwrap_or("sync"))?,
            max_body_bytes,
            segment_size_bytes,
            page_cache_tail_bytes: match pick!(page_cache_tail_bytes).unwrap_or(raftmq_store::limits::PAGE_CACHE_TAIL_BYTES_DEFAULT) {
                0 => None,
                n => Some(n),
            },
            snapshot_interval_entries: match pick!(snapshot_interval_entries).unwrap_or(SNAPSHOT_INTERVAL_ENTRIES_DEFAULT) {
                0 => bail!("--snapshot-interval-entries must be at least 1"),
                n => n,
            },
            retention: raftmq_store::RetentionPolicy {
                max_age: Some(std::time::Duration::from_secs(3600 * pick!(retention_hours).unwrap_or(RETENTION_HOURS_DEFAULT))),
                max_total_bytes: pick!(retention_bytes),
            },
            auto_create_groups: pick!(auto_create_groups).unwrap_or(true),
            routers: match pick!(routers) {
                Some(text) => parse_routers(&text)?,
                None => Vec::new(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: peer lists parse, and mistakes get a message that says what to write instead.
    #[test]
    fn peers_parse_and_reject_mistakes() {
        let peers = parse_peers("1=127.0.0.1:9091, 2=h:9092").unwrap();
        assert_eq!(peers[&2], "h:9092");
        for bad in ["", "1", "x=h:1", "1=h", "1=h:1,1=h:2", "0=h:1"] {
            assert!(parse_peers(bad).is_err(), "{bad:?}");
        }
    }

    // Goal: the page-cache tail defaults to the store's default, and 0 leaves the cache to the kernel.
    #[test]
    fn page_cache_tail_defaults_and_zero_disables() {
        let args = |tail: Option<u64>| ServerArgs {
            node_id: Some(1),
            listen: Some("127.0.0.1:8081".parse().unwrap()),
            peers: Some("1=127.0.0.1:9091".into()),
            page_cache_tail_bytes: tail,
            ..ServerArgs::default()
        };
        let default = raftmq_store::limits::PAGE_CACHE_TAIL_BYTES_DEFAULT;
        assert_eq!(args(None).resolve().unwrap().page_cache_tail_bytes, Some(default));
        assert_eq!(args(Some(0)).resolve().unwrap().page_cache_tail_bytes, None);
        assert_eq!(args(Some(1 << 30)).resolve().unwrap().page_cache_tail_bytes, Some(1 << 30));
    }

    // Goal: router lists parse, and mistakes are refused with what to write instead.
    #[test]
    fn routers_parse_and_reject_mistakes() {
        assert_eq!(parse_routers("127.0.0.1:8080, router2:8080").unwrap(), ["127.0.0.1:8080", "router2:8080"]);
        for bad in ["", ",", "h", "h:0", "h:x", "a b:1", "h:1,h:1"] {
            let error = parse_routers(bad).unwrap_err().to_string();
            assert!(error.contains("router"), "{bad:?}: {error}");
        }
    }
}
