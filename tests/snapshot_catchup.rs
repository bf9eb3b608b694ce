//! Catch-up of a node that lost its data while the leader purged its Raft log and retention
//! deleted old segments: it can only be brought back by a snapshot that carries the retained
//! records.
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Cluster, check_history};

const TOPIC: &str = "faults";
const QUEUES: u32 = 4;

// Goal: a wiped follower that comes back after the leader snapshotted, purged and deleted segments
// installs a snapshot with the retained records, is promoted, and then holds exactly the leader's
// retained messages (same queues, offsets and bytes) and the same log records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_catches_up_past_the_purge_point_by_snapshot() {
    // The harness runs every node with 32 MiB segments.
    let mut cluster = Cluster::start_with(&[
        "--snapshot-interval-entries", "20",
        "--retention-bytes", "40000000",
    ])
    .await;
    cluster.create_topic(TOPIC, QUEUES).await;
    let mut seq = 0;
    let mut acked = cluster.send_acked(TOPIC, &mut seq, 20).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let wiped = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(wiped);
    cluster.wipe(wiped);

    // About 96 MB in 1 MB records: three segments fill, snapshots purge the log, retention
    // (40 MB) deletes the oldest purged segments.
    let padding = "x".repeat(100 * 1024);
    while acked.len() < 20 + 960 {
        let bodies: Vec<String> = (0..10).map(|i| format!("p0-{}-{padding}", seq + i)).collect();
        seq += 10;
        if let Ok(sent) = cluster.send_batch(TOPIC, &bodies).await {
            acked.extend(sent);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let first = cluster.log_digest(leader).await.first().map(|r| r.index).unwrap_or(0);
        if first > 1 {
            break;
        }
        assert!(Instant::now() < deadline, "retention never deleted a segment on the leader\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    cluster.start_node(wiped);
    cluster.wait_for_voter(wiped, Duration::from_secs(60)).await;
    let leader = cluster.wait_for_convergence(Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(&cluster.node(wiped).log_path).unwrap();
    assert!(log.contains("rejoining as a learner"), "the wiped node did not rejoin as a learner:\n{log}");

    // The wiped node holds exactly what the leader retains: same (queue, offset, body).
    let mut on_leader = cluster.read_local(leader, TOPIC, QUEUES).await;
    let mut on_wiped = cluster.read_local(wiped, TOPIC, QUEUES).await;
    on_leader.sort();
    on_wiped.sort();
    assert!(!on_leader.is_empty());
    assert!(on_leader.len() < acked.len(), "retention deleted nothing readable: the test proves less than it claims");
    assert_eq!(on_wiped.len(), on_leader.len(), "the wiped node holds a different number of messages");
    assert!(on_wiped == on_leader, "the wiped node's messages differ from the leader's");

    // Every acknowledged message that is still retained is there exactly once, at its offset.
    let retained: BTreeSet<&str> = on_leader.iter().map(|r| r.body.as_str()).collect();
    let still_retained: Vec<_> = acked.iter().filter(|s| retained.contains(s.body.as_str())).cloned().collect();
    let by_body: std::collections::BTreeMap<&str, u64> = on_leader.iter().map(|r| (r.body.as_str(), r.offset)).collect();
    for sent in &still_retained {
        assert_eq!(by_body[sent.body.as_str()], sent.offset, "acknowledged offset differs");
    }
    // Offsets are dense within what is retained, and nothing is stored twice.
    let mut shifted = on_leader.clone();
    let min_per_queue: std::collections::BTreeMap<u32, u64> =
        shifted.iter().fold(Default::default(), |mut m, r| {
            let e = m.entry(r.queue_id).or_insert(r.offset);
            *e = (*e).min(r.offset);
            m
        });
    for r in &mut shifted {
        r.offset -= min_per_queue[&r.queue_id];
    }
    let rebased: Vec<_> = still_retained
        .iter()
        .map(|s| {
            let queue = on_leader.iter().find(|r| r.body == s.body).unwrap().queue_id;
            common::Sent { body: s.body.clone(), offset: s.offset - min_per_queue[&queue] }
        })
        .collect();
    check_history(&rebased, &shifted).unwrap();

    // Both nodes start their queues at the first message they still hold.
    // Retention keeps running (every 5 s): compare a read with the offsets listed around it, and
    // look again if a segment went away in between.
    for id in [leader, wiped] {
        let list = || async {
            let (_, channel) = raftmq::cli::client::connect(&cluster.node(id).client_addr).await.unwrap();
            let topics = raftmq::cli::client::admin(channel).list_topics(raftmq::admin_pb::ListTopicsRequest {}).await.unwrap().into_inner();
            topics.topics.into_iter().find(|t| t.name == TOPIC).unwrap().queue_offsets
        };
        let mut attempts = 0;
        let (offsets, first_read) = loop {
            let before = list().await;
            let first_read = cluster.read_local(id, TOPIC, QUEUES).await;
            if before == list().await {
                break (before, first_read);
            }
            attempts += 1;
            assert!(attempts < 10, "node {id}: retention never held still");
        };
        for q in &offsets {
            let lowest = first_read.iter().filter(|r| r.queue_id == q.queue_id).map(|r| r.offset).min();
            assert_eq!(Some(q.min_offset), lowest.or(Some(q.max_offset)), "node {id} queue {} min offset", q.queue_id);
        }
    }

    // The log records both hold agree, index by index.
    let leader_log = cluster.log_digest(leader).await;
    let wiped_log = cluster.log_digest(wiped).await;
    let first = leader_log[0].index.max(wiped_log[0].index);
    let common_leader: Vec<_> = leader_log.iter().filter(|r| r.index >= first).collect();
    let common_wiped: Vec<_> = wiped_log.iter().filter(|r| r.index >= first).collect();
    assert_eq!(common_leader.len(), common_wiped.len());
    assert!(common_leader == common_wiped, "log records differ between the leader and the wiped node");
}
