//! The client commands: topic, send, consume, cluster status (groups: group.rs, pop consumption: pop.rs).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;

use super::client::{self, check_status, request};
use super::{ClusterCommand, ConsumeArgs, SendArgs, TopicCommand};
use crate::admin_pb::{
    ClusterStatusRequest, CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest, ListTopicsRequest, ReadLocalRequest, TopicInfo,
    UpdateTopicRequest,
};
use crate::v2::{
    Code, MessageQueue, PullMessageRequest, QueryRouteRequest, Resource, SendMessageRequest, pull_message_response,
};

/// Fails with the server's message when an admin status is not OK (0; otherwise a v2 code).
pub(super) fn admin_ok(status: Option<&crate::admin_pb::AdminStatus>, what: &str) -> anyhow::Result<()> {
    match status {
        Some(s) if s.code == 0 => Ok(()),
        Some(s) => check_status(Some(&crate::v2::Status { code: s.code, message: s.message.clone() }), what),
        None => bail!("{what} failed: no status"),
    }
}

pub async fn topic(command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create { endpoint, topic, queues, groups } if !groups.is_empty() => {
            let (_, channel) = client::connect(&endpoint).await?;
            let request = crate::router_pb::PlaceTopicRequest { topic: topic.clone(), queues, groups };
            let response = match crate::router_pb::router_client::RouterClient::new(channel).place_topic(request).await {
                Err(e) if e.code() == tonic::Code::Unimplemented => bail!("--groups needs a router endpoint (`raftmq router`); {endpoint} is a broker node"),
                other => other?.into_inner(),
            };
            if response.code != 0 {
                bail!("topic create failed: {}", response.message);
            }
            println!("topic {topic} ready with {queues} queues in each of {}", response.groups.join(", "));
        }
        TopicCommand::Create { endpoint, topic, queues, .. } => {
            let (_, channel) = client::connect(&endpoint).await?;
            let response = client::admin(channel).create_topic(CreateTopicRequest { topic: topic.clone(), queues }).await?;
            admin_ok(response.get_ref().status.as_ref(), "topic create")?;
            println!("topic {topic} ready with {queues} queues");
        }
        TopicCommand::Update { endpoint, topic, queues } => {
            let (_, channel) = client::connect(&endpoint).await?;
            let response = client::admin(channel).update_topic(UpdateTopicRequest { topic: topic.clone(), queues }).await?;
            admin_ok(response.get_ref().status.as_ref(), "topic update")?;
            println!("topic {topic} has {queues} queues");
        }
        TopicCommand::List { endpoint, json } => {
            let (_, channel) = client::connect(&endpoint).await?;
            let response = client::admin(channel).list_topics(ListTopicsRequest {}).await?.into_inner();
            admin_ok(response.status.as_ref(), "topic list")?;
            for t in response.topics {
                if json {
                    println!("{}", topic_json(&t));
                } else {
                    let messages: u64 = t.queue_offsets.iter().map(|q| q.max_offset - q.min_offset).sum();
                    println!("{}\tqueues={}\tmessages={}", t.name, t.queues, messages);
                }
            }
        }
        TopicCommand::Describe { endpoint, topic, json } => {
            let (_, channel) = client::connect(&endpoint).await?;
            let response = client::admin(channel).describe_topic(DescribeTopicRequest { topic }).await?.into_inner();
            admin_ok(response.status.as_ref(), "topic describe")?;
            let t = response.topic.context("topic describe: the server sent no topic")?;
            if json {
                let mut out = topic_json(&t);
                out["broker_group"] = response.broker_group.into();
                println!("{out}");
            } else {
                println!("topic {}  queues={}  broker group {}", t.name, t.queues, response.broker_group);
                println!("{:>6} {:>12} {:>12}", "QUEUE", "MIN", "MAX");
                for q in &t.queue_offsets {
                    println!("{:>6} {:>12} {:>12}", q.queue_id, q.min_offset, q.max_offset);
                }
            }
        }
        TopicCommand::Delete { endpoint, topic } => {
            let (_, channel) = client::connect(&endpoint).await?;
            let response = client::admin(channel).delete_topic(DeleteTopicRequest { topic: topic.clone() }).await?;
            admin_ok(response.get_ref().status.as_ref(), "topic delete")?;
            println!("topic {topic} deleted");
        }
    }
    Ok(())
}

/// A topic as `topic list --json` and `topic describe --json` print it.
fn topic_json(t: &TopicInfo) -> serde_json::Value {
    let queues: Vec<_> = t.queue_offsets.iter().map(|q| serde_json::json!({"queue_id": q.queue_id, "min_offset": q.min_offset, "max_offset": q.max_offset})).collect();
    serde_json::json!({"topic": t.name, "queues": t.queues, "offsets": queues})
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let (_, channel) = client::connect(&args.endpoint).await?;
    let mut messaging = client::messaging(channel);
    let client_id = client::new_client_id();
    for i in 0..args.count {
        let body = if args.count > 1 { format!("{}-{i}", args.body) } else { args.body.clone() };
        let mut message = client::normal_message(&args.topic, body.into_bytes().into(), client::new_message_id(), "raftmq-cli");
        if let Some(props) = message.system_properties.as_mut() {
            props.tag = args.tag.clone();
            props.keys = args.keys.iter().cloned().collect();
        }
        let response = messaging.send_message(request(&client_id, SendMessageRequest { messages: vec![message] })).await?.into_inner();
        check_status(response.status.as_ref(), "send")?;
        for entry in response.entries {
            println!("{}", serde_json::json!({"message_id": entry.message_id, "offset": entry.offset, "status": "SEND_OK"}));
        }
    }
    Ok(())
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(group) = &args.group {
        return super::pop::consume(&args, group).await;
    }
    let idle = super::parse_duration(&args.until_idle)?;
    let (_, channel) = client::connect(&args.endpoint).await?;
    let client_id = client::new_client_id();
    let mut messaging = client::messaging(channel.clone());
    let route = messaging
        .query_route(request(&client_id, QueryRouteRequest { topic: Some(Resource { resource_namespace: String::new(), name: args.topic.clone() }), endpoints: None }))
        .await?
        .into_inner();
    check_status(route.status.as_ref(), "route query")?;
    let mut queues: Vec<MessageQueue> = route.message_queues;
    if args.local {
        // Only the pointed-at node's group is on that node (the route may span groups).
        let own = client::admin(channel.clone()).get_node_status(crate::admin_pb::NodeStatusRequest {}).await?.into_inner().group;
        queues.retain(|q| q.broker.as_ref().is_some_and(|b| b.name == own));
    }
    // Each group's queues are served by that group's nodes, as listed in the route.
    let mut group_clients: HashMap<String, MessagingClient> = HashMap::new();
    for q in &queues {
        let broker = q.broker.clone().unwrap_or_default();
        if !group_clients.contains_key(&broker.name) {
            let addrs: Vec<String> = broker.endpoints.iter().flat_map(|e| &e.addresses).map(|a| format!("{}:{}", a.host, a.port)).collect();
            let group_channel = if addrs.is_empty() { channel.clone() } else { client::connect(&addrs.join(";")).await?.1 };
            group_clients.insert(broker.name, client::messaging(group_channel));
        }
    }
    let client_of = |q: &MessageQueue| group_clients[&q.broker.as_ref().map(|b| b.name.clone()).unwrap_or_default()].clone();
    let mut next: Vec<u64> = vec![0; queues.len()];
    if args.from == "latest" {
        for (i, q) in queues.iter().enumerate() {
            let response = client_of(q)
                .query_offset(request(&client_id, crate::v2::QueryOffsetRequest { message_queue: Some(q.clone()), query_offset_policy: crate::v2::QueryOffsetPolicy::End as i32, timestamp: None }))
                .await?
                .into_inner();
            check_status(response.status.as_ref(), "offset query")?;
            next[i] = response.offset as u64;
        }
    }
    let mut admin = client::admin(channel);
    let mut last_message = Instant::now();
    loop {
        let mut got = 0;
        for (i, q) in queues.iter().enumerate() {
            got += if args.local {
                let response = admin
                    .read_local(ReadLocalRequest { topic: args.topic.clone(), queue_id: q.id as u32, from_offset: next[i], max_messages: 1024 })
                    .await?
                    .into_inner();
                admin_ok(response.status.as_ref(), "local read")?;
                for m in &response.messages {
                    print_message(m.queue_id, m.queue_offset, &m.message_id, &m.keys, &m.tag, &m.body);
                }
                next[i] = response.next_offset;
                response.messages.len()
            } else {
                pull_once(&mut client_of(q), &client_id, q, &mut next[i]).await?
            };
        }
        if got > 0 {
            last_message = Instant::now();
        } else if last_message.elapsed() >= idle {
            return Ok(());
        } else {
            tokio::time::sleep(Duration::from_millis(100).min(idle)).await;
        }
    }
}

type MessagingClient = crate::v2::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>;

async fn pull_once(
    messaging: &mut MessagingClient,
    client_id: &str,
    queue: &MessageQueue,
    next: &mut u64,
) -> anyhow::Result<usize> {
    let pull = PullMessageRequest {
        group: None,
        message_queue: Some(queue.clone()),
        offset: *next as i64,
        batch_size: 256,
        filter_expression: None,
        long_polling_timeout: None,
    };
    let mut stream = messaging.pull_message(request(client_id, pull)).await?.into_inner();
    let mut got = 0;
    while let Some(frame) = stream.next().await {
        match frame.context("pull stream broke")?.content {
            Some(pull_message_response::Content::Status(s)) if s.code == Code::MessageNotFound as i32 => {}
            Some(pull_message_response::Content::Status(s)) => check_status(Some(&s), "pull")?,
            Some(pull_message_response::Content::Message(m)) => {
                let props = m.system_properties.unwrap_or_default();
                print_message(queue.id as u32, props.queue_offset.unwrap_or(-1) as u64, &props.message_id, &props.keys, props.tag.as_deref().unwrap_or(""), &m.body);
                got += 1;
            }
            Some(pull_message_response::Content::NextOffset(n)) => *next = n as u64,
            None => {}
        }
    }
    Ok(got)
}

pub(super) fn print_message(queue_id: u32, queue_offset: u64, message_id: &str, keys: &[String], tag: &str, body: &[u8]) {
    println!(
        "{}",
        serde_json::json!({
            "queue_id": queue_id,
            "queue_offset": queue_offset,
            "message_id": message_id,
            "keys": keys,
            "tag": tag,
            "body": String::from_utf8_lossy(body),
        })
    );
}

pub async fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    let (endpoint, json) = match command {
        ClusterCommand::Status { endpoint, json } => (endpoint, json),
        ClusterCommand::TransferLeader { endpoint, to } => {
            let (_, channel) = client::connect(&endpoint).await?;
            let response = client::admin(channel).transfer_leader(crate::admin_pb::TransferLeaderRequest { to_node_id: to }).await?;
            admin_ok(response.get_ref().status.as_ref(), "transfer-leader")?;
            println!("asked the leader to hand leadership to node {to}");
            return Ok(());
        }
    };
    let (_, channel) = client::connect(&endpoint).await?;
    let response = client::admin(channel).cluster_status(ClusterStatusRequest {}).await?.into_inner();
    let nodes: Vec<_> = response
        .nodes
        .iter()
        .map(|n| {
            let mut v = serde_json::json!({"id": n.id, "role": n.role, "term": n.term, "last_log_index": n.last_log_index,
                "committed": n.committed, "applied": n.applied, "endpoint": n.endpoint, "group": n.group});
            if !n.error.is_empty() {
                v["error"] = n.error.clone().into();
            }
            v
        })
        .collect();
    if json {
        println!("{}", serde_json::json!({ "nodes": nodes }));
    } else {
        for n in &response.nodes {
            println!("{} node {} {:<11} term={} last_log={} committed={} applied={} {} {}", n.group, n.id, n.role, n.term, n.last_log_index, n.committed, n.applied, n.endpoint, n.error);
        }
    }
    Ok(())
}
