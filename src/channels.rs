//! One cached, lazily connected tonic Channel per address (never one per RPC).
use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::transport::Channel;

use crate::status::ApiError;

pub struct ChannelCache {
    channels: Mutex<HashMap<String, Channel>>,
    /// Past this many addresses the cache starts over (addresses of long-gone nodes pile up).
    entries_max: usize,
}

impl ChannelCache {
    pub fn new(entries_max: usize) -> ChannelCache {
        ChannelCache { channels: Mutex::new(HashMap::new()), entries_max }
    }

    pub fn get(&self, addr: &str) -> Result<Channel, ApiError> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ApiError::internal(format!("bad address {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy();
        if channels.len() >= self.entries_max {
            channels.clear();
        }
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}
