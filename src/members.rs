//! The clients of each consumer group that this node heard from lately (heartbeats, telemetry
//! settings, receives), for `raftmq group describe`.
//!
//! Kept in memory per node and never replicated: membership is what clients do right now, not
//! state that must survive a failover. A client counts as a member until it has been silent for
//! `MEMBER_EXPIRY` (RocketMQ clients heartbeat every 10 s). The table is bounded: once
//! `MEMBERS_MAX` live entries are held, new clients are not recorded (old ones still refresh).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Silence after which a client no longer counts as a member.
pub const MEMBER_EXPIRY: Duration = Duration::from_secs(30);
/// Most (group, client) entries one node tracks.
pub const MEMBERS_MAX: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub client_id: String,
    /// apache.rocketmq.v2.ClientType as its number; 0 until a heartbeat or settings say.
    pub client_type: i32,
    pub last_seen_ago: Duration,
}

#[derive(Clone, Copy)]
struct Seen {
    client_type: i32,
    at: Instant,
}

#[derive(Default)]
pub struct Members {
    /// (group, client id) -> last contact.
    table: Mutex<HashMap<(String, String), Seen>>,
}

impl Members {
    /// Records that `client_id` acted for `group` now. `client_type` 0 keeps the known type.
    pub fn seen(&self, group: &str, client_id: &str, client_type: i32) {
        self.seen_at(group, client_id, client_type, Instant::now());
    }

    fn seen_at(&self, group: &str, client_id: &str, client_type: i32, at: Instant) {
        if group.is_empty() || client_id.is_empty() {
            return;
        }
        let mut table = self.table.lock();
        let key = (group.to_string(), client_id.to_string());
        if let Some(seen) = table.get_mut(&key) {
            seen.at = at;
            if client_type != 0 {
                seen.client_type = client_type;
            }
            return;
        }
        if table.len() >= MEMBERS_MAX {
            table.retain(|_, seen| at.saturating_duration_since(seen.at) < MEMBER_EXPIRY);
            if table.len() >= MEMBERS_MAX {
                return;
            }
        }
        table.insert(key, Seen { client_type, at });
    }

    /// The group's live members, most recently seen first.
    pub fn of(&self, group: &str) -> Vec<Member> {
        self.of_at(group, Instant::now())
    }

    fn of_at(&self, group: &str, now: Instant) -> Vec<Member> {
        let mut table = self.table.lock();
        table.retain(|_, seen| now.saturating_duration_since(seen.at) < MEMBER_EXPIRY);
        let mut members: Vec<Member> = table
            .iter()
            .filter(|((g, _), _)| g == group)
            .map(|((_, client_id), seen)| Member {
                client_id: client_id.clone(),
                client_type: seen.client_type,
                last_seen_ago: now.saturating_duration_since(seen.at),
            })
            .collect();
        members.sort_by(|a, b| a.last_seen_ago.cmp(&b.last_seen_ago).then_with(|| a.client_id.cmp(&b.client_id)));
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a member is listed under its group only, keeps its known type, and drops out after the expiry.
    #[test]
    fn members_are_per_group_and_expire() {
        let members = Members::default();
        let start = Instant::now();
        members.seen_at("g", "c1", 3, start);
        members.seen_at("g", "c1", 0, start + Duration::from_secs(5));
        members.seen_at("other", "c2", 1, start);
        let listed = members.of_at("g", start + Duration::from_secs(6));
        assert_eq!(listed, vec![Member { client_id: "c1".into(), client_type: 3, last_seen_ago: Duration::from_secs(1) }]);
        assert!(members.of_at("g", start + Duration::from_secs(5) + MEMBER_EXPIRY).is_empty());
    }

    // Goal: the table never holds more than MEMBERS_MAX entries; expired ones make room.
    #[test]
    fn table_is_bounded() {
        let members = Members::default();
        let start = Instant::now();
        for i in 0..MEMBERS_MAX + 10 {
            members.seen_at("g", &format!("c{i}"), 0, start);
        }
        assert_eq!(members.table.lock().len(), MEMBERS_MAX);
        members.seen_at("g", "late", 0, start + MEMBER_EXPIRY);
        assert_eq!(members.of_at("g", start + MEMBER_EXPIRY).len(), 1);
    }
}
