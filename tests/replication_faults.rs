//! Fault tests against three real `raftmq server` processes on loopback.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, Read, Sent, check_history, check_producer_order};
use tokio::sync::Mutex;

const TOPIC: &str = "faults";
const QUEUES: u32 = 4;

fn producer_of(body: &str) -> (String, u64) {
    let (producer, seq) = body.rsplit_once('-').unwrap();
    (producer.to_string(), seq.parse().unwrap())
}

/// Runs `producers` sequential producers until `stop` is set; returns acked sends.
fn spawn_producers(cluster: Arc<Mutex<Cluster>>, producers: usize, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<Sent>>> {
    (0..producers)
        .map(|p| {
            let cluster = cluster.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut seq = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body = format!("p{p}-{seq}");
                    seq += 1;
                    let result = { cluster.lock().await.send(TOPIC, &body).await };
                    match result {
                        Ok(sent) => acked.push(sent),
                        // Failed or indeterminate: never retried, so it may appear once or not at all.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                acked
            })
        })
        .collect()
}

async fn assert_all_nodes_agree(cluster: &Cluster, acked: &[Sent]) -> Vec<Read> {
    let leader = cluster.wait_for_convergence(Duration::from_secs(30)).await;
    let mut through_leader = cluster.pull_all(leader, TOPIC, QUEUES).await;
    through_leader.sort();
    check_history(acked, &through_leader).unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    check_producer_order(acked, &through_leader, producer_of).unwrap();
    let leader_log = cluster.log_digest(leader).await;
    for id in cluster.running() {
        let mut local = cluster.read_local(id, TOPIC, QUEUES).await;
        local.sort();
        assert_eq!(local, through_leader, "node {id}'s consume queues differ from the leader's");
        let log = cluster.log_digest(id).await;
        assert_eq!(log.len(), leader_log.len(), "node {id}'s commitlog has a different length");
        assert!(log == leader_log, "node {id}'s commitlog differs from leader {leader}'s");
    }
    through_leader
}

// Goal: sends keep flowing while the leader is SIGKILLed and restarted twice, and afterwards every
// acknowledged message is readable exactly once at its offset, offsets are dense and in send order
// per producer, and all three commitlogs hold identical entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_leader_kills() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, QUEUES).await;
    let cluster = Arc::new(Mutex::new(cluster));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers = spawn_producers(cluster.clone(), 2, stop.clone());
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = { cluster.lock().await.wait_for_leader(Duration::from_secs(20)).await };
        cluster.lock().await.kill(leader);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.lock().await.start_node(leader);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for p in producers {
        acked.extend(p.await.unwrap());
    }
    assert!(acked.len() > 20, "too few sends succeeded ({}) for the test to mean anything", acked.len());
    let cluster = cluster.lock().await;
    let read = assert_all_nodes_agree(&cluster, &acked).await;
    eprintln!("acked {} messages, read {}", acked.len(), read.len());
}

// Goal: a full stop (SIGKILL) and restart of all three nodes loses nothing acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, QUEUES).await;
    let mut seq = 0;
    let mut acked = cluster.send_acked(TOPIC, &mut seq, 200).await;
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    acked.extend(cluster.send_acked(TOPIC, &mut seq, 50).await);
    assert_all_nodes_agree(&cluster, &acked).await;
}

// Goal: a follower whose data dir is wiped while it is down rejoins (as a learner, without voting),
// catches up, and serves every message once it becomes leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_rejoins_and_serves_everything_as_leader() {
    let mut cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, QUEUES).await;
    let mut seq = 0;
    let mut acked = cluster.send_acked(TOPIC, &mut seq, 100).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let wiped = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(wiped);
    cluster.wipe(wiped);
    acked.extend(cluster.send_acked(TOPIC, &mut seq, 100).await);
    cluster.start_node(wiped);
    cluster.wait_for_voter(wiped, Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(&cluster.node(wiped).log_path).unwrap();
    assert!(log.contains("rejoining as a learner"), "the wiped node did not take the learner path:\n{log}");
    assert!(log.contains("promoted: voting again"), "the wiped node was not promoted:\n{log}");
    // Make the wiped node the leader (the old leader hands over, then is killed for good measure).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.wait_for_leader(Duration::from_secs(20)).await != wiped {
        assert!(std::time::Instant::now() < deadline, "leadership never moved to the wiped node\n{}", cluster.logs());
        cluster.transfer_leader(wiped).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let old_leader = (1..=3).find(|id| *id != wiped).unwrap();
    cluster.kill(old_leader);
    assert_eq!(cluster.wait_for_leader(Duration::from_secs(20)).await, wiped, "the wiped node never became leader");
    assert_all_nodes_agree(&cluster, &acked).await;
}

// Goal: a node that lost its data never casts the vote that elects a leader. With the leader down
// and only the wiped node and one intact node up, no leader may be elected (the wiped node could
// have voted in that term before it lost its disk); once the old leader returns, the group
// recovers with every acknowledged message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_does_not_vote_a_leader_in() {
    let mut cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, QUEUES).await;
    let mut seq = 0;
    let acked = cluster.send_acked(TOPIC, &mut seq, 50).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let wiped = (1..=3).find(|id| *id != leader).unwrap();
    let intact = (1..=3).find(|id| *id != leader && *id != wiped).unwrap();
    cluster.kill(wiped);
    cluster.wipe(wiped);
    cluster.kill(leader);
    cluster.start_node(wiped);
    // Several election timeouts (400-800 ms) pass: the intact node campaigns and must fail.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut saw_rejoining = false;
    while std::time::Instant::now() < deadline {
        for id in [wiped, intact] {
            if let Some(status) = cluster.status(id).await {
                assert_ne!(status.role, "leader", "node {id} became leader with a wiped node's vote: {status:?}");
                saw_rejoining |= id == wiped && status.role == "rejoining";
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_rejoining, "the wiped node never reported that it is rejoining\n{}", cluster.logs());
    cluster.start_node(leader);
    cluster.wait_for_voter(wiped, Duration::from_secs(30)).await;
    assert_all_nodes_agree(&cluster, &acked).await;
}
