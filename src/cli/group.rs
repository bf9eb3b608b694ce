//! `raftmq group create|list|describe|delete`.
use anyhow::Context;

use super::GroupCommand;
use super::client;
use super::commands::admin_ok;
use crate::admin_pb::{CreateGroupRequest, DeleteGroupRequest, DescribeGroupRequest, DescribeGroupResponse, GroupInfo, ListGroupsRequest};

pub async fn run(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create { endpoint, group, max_delivery_attempts, fifo } => {
            let (_, channel) = client::connect(&endpoint).await?;
            let request = CreateGroupRequest { group: group.clone(), max_delivery_attempts, fifo };
            let response = client::admin(channel).create_group(request).await?;
            admin_ok(response.get_ref().status.as_ref(), "group create")?;
            println!("consumer group {group} created (max delivery attempts {max_delivery_attempts}, fifo {fifo})");
        }
        GroupCommand::List { endpoint, json } => {
            let (_, channel) = client::connect(&endpoint).await?;
            let response = client::admin(channel).list_groups(ListGroupsRequest {}).await?.into_inner();
            admin_ok(response.status.as_ref(), "group list")?;
            for g in &response.groups {
                if json {
                    println!("{}", group_json(g));
                } else {
                    println!("{}\tmax_delivery_attempts={}\tfifo={}", g.name, g.max_delivery_attempts, g.fifo);
                }
            }
            if response.truncated {
                eprintln!("note: more groups exist than one answer lists ({})", response.groups.len());
            }
        }
        GroupCommand::Describe { endpoint, group, topic, json } => {
            let (_, channel) = client::connect(&endpoint).await?;
            let request = DescribeGroupRequest { group, topic: topic.unwrap_or_default() };
            let response = client::admin(channel).describe_group(request).await?.into_inner();
            admin_ok(response.status.as_ref(), "group describe")?;
            if json {
                println!("{}", describe_json(&response)?);
            } else {
                print_describe(&response)?;
            }
        }
        GroupCommand::Delete { endpoint, group } => {
            let (_, channel) = client::connect(&endpoint).await?;
            let response = client::admin(channel).delete_group(DeleteGroupRequest { group: group.clone() }).await?;
            admin_ok(response.get_ref().status.as_ref(), "group delete")?;
            println!("consumer group {group} deleted");
        }
    }
    Ok(())
}

fn group_json(g: &GroupInfo) -> serde_json::Value {
    serde_json::json!({"group": g.name, "max_delivery_attempts": g.max_delivery_attempts, "fifo": g.fifo})
}

fn describe_json(response: &DescribeGroupResponse) -> anyhow::Result<serde_json::Value> {
    let mut out = group_json(response.group.as_ref().context("group describe: the server sent no group")?);
    out["queues"] = response
        .queues
        .iter()
        .map(|q| {
            serde_json::json!({"topic": q.topic, "queue_id": q.queue_id, "pop_offset": q.pop_offset, "acked_offset": q.acked_offset,
                "inflight": q.inflight, "committed_offset": q.committed_offset, "min_offset": q.min_offset, "max_offset": q.max_offset, "lag": q.lag})
        })
        .collect();
    out["members"] = response
        .members
        .iter()
        .map(|m| serde_json::json!({"client_id": m.client_id, "client_type": m.client_type, "node_id": m.node_id, "last_seen_ms_ago": m.last_seen_ms_ago}))
        .collect();
    out["truncated"] = response.truncated.into();
    Ok(out)
}

fn print_describe(response: &DescribeGroupResponse) -> anyhow::Result<()> {
    let g = response.group.as_ref().context("group describe: the server sent no group")?;
    println!("consumer group {}  max_delivery_attempts={}  fifo={}", g.name, g.max_delivery_attempts, g.fifo);
    println!("{:<24} {:>6} {:>10} {:>10} {:>9} {:>10} {:>10} {:>10}", "TOPIC", "QUEUE", "POP", "ACKED", "INFLIGHT", "COMMITTED", "MAX", "LAG");
    for q in &response.queues {
        let committed = q.committed_offset.map_or("-".to_string(), |c| c.to_string());
        println!(
            "{:<24} {:>6} {:>10} {:>10} {:>9} {:>10} {:>10} {:>10}",
            q.topic, q.queue_id, q.pop_offset, q.acked_offset, q.inflight, committed, q.max_offset, q.lag
        );
    }
    if response.truncated {
        println!("(more queues than one answer lists)");
    }
    let lag: u64 = response.queues.iter().map(|q| q.lag).sum();
    println!("total lag {lag}");
    if response.members.is_empty() {
        println!("members: none seen in the last 30 s");
    } else {
        println!("members:");
        for m in &response.members {
            println!("  {}  {}  node {}  seen {} ms ago", m.client_id, m.client_type, m.node_id, m.last_seen_ms_ago);
        }
    }
    Ok(())
}
