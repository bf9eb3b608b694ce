//! Two three-node groups behind one router, as real processes: a topic placed on both groups is
//! produced and consumed through the router's route; losing one group's leader leaves the other
//! group serving; a dead node leaves the route after the timeout and returns after a restart.
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cluster, Read, Router, pull_all_from, query_route, send_to};
use raftmq::cli::client;
use raftmq::router_pb::RegisterRequest;
use raftmq::router_pb::router_client::RouterClient;
use raftmq::v2::{Code, QueryRouteResponse, SendMessageRequest};

const NODE_TIMEOUT_MS: u64 = 3000;
const QUEUES: u32 = 2;

/// group -> (its endpoints as `a;b;c`, its queue ids), from a route.
fn by_group(route: &QueryRouteResponse) -> BTreeMap<String, (String, Vec<u32>)> {
    let mut groups: BTreeMap<String, (String, Vec<u32>)> = BTreeMap::new();
    for q in &route.message_queues {
        let broker = q.broker.as_ref().unwrap();
        let endpoints = broker.endpoints.as_ref().unwrap().addresses.iter().map(|a| format!("{}:{}", a.host, a.port)).collect::<Vec<_>>();
        let entry = groups.entry(broker.name.clone()).or_insert_with(|| (endpoints.join(";"), vec![]));
        entry.1.push(q.id as u32);
    }
    groups
}

fn sorted_addrs(cluster: &Cluster, except: Option<u64>) -> String {
    let mut addrs: Vec<String> = cluster.nodes.iter().filter(|n| Some(n.id) != except).map(|n| n.client_addr.clone()).collect();
    addrs.sort();
    addrs.join(";")
}

/// Polls the router's route until group `group` lists exactly `endpoints`.
async fn wait_for_route_endpoints(router: &Router, topic: &str, group: &str, endpoints: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let route = by_group(&router.route(topic).await);
        if route.get(group).map(|(e, _)| e.as_str()) == Some(endpoints) {
            return;
        }
        assert!(Instant::now() < deadline, "route of {group} never became {endpoints}: {route:?}\n{}", router.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn bodies(reads: &[Read]) -> Vec<String> {
    let mut bodies: Vec<String> = reads.iter().map(|r| r.body.clone()).collect();
    bodies.sort();
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_groups_behind_one_router() {
    let router = Router::start(NODE_TIMEOUT_MS);
    let routers = ["--routers", router.addr.as_str()];
    let mut g1 = Cluster::start_group("g1", &routers).await;
    let g2 = Cluster::start_group("g2", &routers).await;
    router.wait_for_nodes(6, Duration::from_secs(30)).await;

    // Placement through the router with the CLI: QUEUES queues in each group.
    let topic = "orders";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args(["topic", "create", "--endpoint", &router.addr, "--topic", topic, "--queues", &QUEUES.to_string(), "--groups", "g1,g2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("g1, g2"), "{}", String::from_utf8_lossy(&out.stdout));

    // The router merges both groups; each group's queues point at that group's nodes.
    let route = router.route(topic).await;
    assert_eq!(route.status.as_ref().unwrap().code, Code::Ok as i32, "{route:?}");
    let groups = by_group(&route);
    assert_eq!(groups.keys().cloned().collect::<Vec<_>>(), ["g1", "g2"]);
    assert_eq!(groups["g1"], (sorted_addrs(&g1, None), vec![0, 1]));
    assert_eq!(groups["g2"], (sorted_addrs(&g2, None), vec![0, 1]));
    // A broker node with routers configured answers with the same merged view.
    assert_eq!(by_group(&query_route(&g1.node(2).client_addr, topic).await), groups);

    // Produce through the route: alternate groups, as a client spreading over the queues does.
    let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..40 {
        let group = if i % 2 == 0 { "g1" } else { "g2" };
        let body = format!("{group}-{i}");
        send_to(&groups[group].0, topic, std::slice::from_ref(&body)).await.unwrap_or_else(|e| panic!("send to {group}: {e}"));
        sent.entry(group.to_string()).or_default().push(body);
    }
    for v in sent.values_mut() {
        v.sort();
    }
    // Each group holds exactly what was sent to it, on every node.
    for (group, cluster) in [("g1", &g1), ("g2", &g2)] {
        cluster.wait_for_convergence(Duration::from_secs(20)).await;
        for id in 1..=3 {
            assert_eq!(bodies(&cluster.read_local(id, topic, QUEUES).await), sent[group], "{group} node {id}");
        }
    }
    // Consume through the route: every queue of every group, from that group's endpoints.
    let mut consumed = Vec::new();
    for (endpoints, queue_ids) in groups.values() {
        consumed.extend(pull_all_from(endpoints, topic, queue_ids.clone()).await);
    }
    let mut all_sent: Vec<String> = sent.values().flatten().cloned().collect();
    all_sent.sort();
    assert_eq!(bodies(&consumed), all_sent);

    // SIGKILL g1's leader: g2 keeps taking every send while g1 elects a new leader.
    let g1_leader = g1.wait_for_leader(Duration::from_secs(10)).await;
    g1.kill(g1_leader);
    for i in 0..20 {
        send_to(&groups["g2"].0, topic, &[format!("g2-after-kill-{i}")]).await.unwrap_or_else(|e| panic!("g2 send {i} failed while g1 re-elects: {e}"));
    }
    let new_leader = g1.wait_for_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, g1_leader);
    let mut seq = 0;
    g1.send_acked(topic, &mut seq, 5).await;

    // The dead node leaves the route after the timeout, and is back once restarted.
    wait_for_route_endpoints(&router, topic, "g1", &sorted_addrs(&g1, Some(g1_leader))).await;
    assert_eq!(by_group(&router.route(topic).await)["g2"].0, sorted_addrs(&g2, None), "g2 is untouched");
    g1.start_node(g1_leader);
    wait_for_route_endpoints(&router, topic, "g1", &sorted_addrs(&g1, None)).await;
}

fn registration(group: &str, client_endpoint: &str) -> RegisterRequest {
    RegisterRequest {
        group: group.into(),
        node_id: 1,
        role: "leader".into(),
        client_endpoint: client_endpoint.into(),
        admin_port: 1,
        topics: vec![raftmq::router_pb::TopicQueues { topic: "known".into(), queues: 1 }],
        ..Default::default()
    }
}

// Goal: bad registrations and bad client calls get clear errors and protocol codes, and change nothing.
#[tokio::test]
async fn router_rejects_bad_input() {
    let router = Router::start(NODE_TIMEOUT_MS);
    let channel = loop {
        if let Ok((_, channel)) = client::connect(&router.addr).await {
            break channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut registrar = RouterClient::new(channel.clone());
    for (bad, says) in [
        (registration("", "127.0.0.1:1"), "group name"),
        (registration("g 1", "127.0.0.1:1"), "group name"),
        (registration("g1", "no-port"), "client endpoint"),
        (registration("g1", "127.0.0.1:0"), "client endpoint"),
        (RegisterRequest { admin_port: 0, ..registration("g1", "127.0.0.1:1") }, "admin endpoint"),
    ] {
        let error = registrar.register(bad).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(error.message().contains(says), "{}", error.message());
    }
    assert!(router.nodes().await.is_empty(), "rejected registrations changed the registry");

    let code = |r: QueryRouteResponse| r.status.unwrap().code;
    assert_eq!(code(router.route("known").await), Code::TopicNotFound as i32, "no group registered yet");
    assert_eq!(code(router.route("bad/topic").await), Code::IllegalTopic as i32);
    registrar.register(registration("g1", "127.0.0.1:1")).await.unwrap();
    assert_eq!(code(router.route("known").await), Code::Ok as i32);
    assert_eq!(code(router.route("unknown").await), Code::TopicNotFound as i32);

    // Data calls belong to brokers: the router says so with NOT_IMPLEMENTED.
    let message = client::normal_message("known", "x".into(), client::new_message_id(), "router-test");
    let sent = client::messaging(channel).send_message(client::request("router-test", SendMessageRequest { messages: vec![message] })).await.unwrap();
    let status = sent.into_inner().status.unwrap();
    assert_eq!(status.code, Code::NotImplemented as i32);
    assert!(status.message.contains("broker endpoint"), "{}", status.message);

    // Placement on a group nobody registered, or with an illegal name, creates nothing.
    let place = |topic: &str, groups: &[&str]| raftmq::router_pb::PlaceTopicRequest {
        topic: topic.into(),
        queues: 1,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    let unknown = registrar.place_topic(place("t", &["g9"])).await.unwrap().into_inner();
    assert_eq!(unknown.code, Code::BadRequest as i32);
    assert!(unknown.message.contains("g9"), "{}", unknown.message);
    let illegal = registrar.place_topic(place("bad/topic", &[])).await.unwrap().into_inner();
    assert_eq!(illegal.code, Code::IllegalTopic as i32);
}
