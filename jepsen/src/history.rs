//! The history of a run: every operation's invocation and completion with timestamps, in the
//! Jepsen sense. A send is invoked and then completes `ok` (acknowledged), `fail` (definitely not
//! written) or `info` (indeterminate: a timeout or a broken connection may or may not have
//! written it). A consumer's receive is an invoke and one completion listing what it was handed
//! (so a delivery is known to have been asked for after everything that completed before the
//! invoke); each ack of one value is an invoke and a completion. A process runs one operation at a
//! time. Nemesis faults are an `invoke` (the fault starts) followed by an `ok` (it is healed).
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum F {
    /// A synchronous single-message send; `value` is the unique body.
    Send,
    /// A ReceiveMessage of the consumer group: the completion lists `deliveries`.
    Receive,
    /// A consumer acknowledges the delivery of `value` (at `queue`/`offset`, `attempt`); ok = the
    /// broker answered OK for that entry, fail = it refused the receipt handle.
    Ack,
    /// A fault: invoke = injected, ok = healed; `value` describes it.
    Nemesis,
}

/// The process id of the nemesis.
pub const NEMESIS: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub process: u32,
    #[serde(rename = "type")]
    pub typ: Type,
    pub f: F,
    /// Microseconds since the start of the run.
    pub time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The node endpoint the operation went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// An ack: the delivery attempt it acknowledges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// A receive's completion: what it was handed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<Delivery>>,
}

impl Op {
    pub fn new(process: u32, typ: Type, f: F, time: u64) -> Op {
        Op { process, typ, f, time, value: None, queue: None, offset: None, node: None, error: None, attempt: None, deliveries: None }
    }
    pub fn value(mut self, v: impl Into<String>) -> Op {
        self.value = Some(v.into());
        self
    }
    pub fn at(mut self, queue: u32, offset: u64) -> Op {
        self.queue = Some(queue);
        self.offset = Some(offset);
        self
    }
    pub fn offset(mut self, offset: u64) -> Op {
        self.offset = Some(offset);
        self
    }
    pub fn node(mut self, n: impl Into<String>) -> Op {
        self.node = Some(n.into());
        self
    }
    pub fn error(mut self, e: impl Into<String>) -> Op {
        self.error = Some(e.into());
        self
    }
    /// An ack of `d`: its value, place and attempt.
    pub fn acking(self, d: &Delivery) -> Op {
        let mut op = self.value(&d.value).at(d.queue, d.offset);
        op.attempt = Some(d.attempt);
        op
    }
    pub fn delivered(mut self, deliveries: Vec<Delivery>) -> Op {
        self.deliveries = Some(deliveries);
        self
    }
}

/// One message a receive handed to a consumer: what, where, and the broker's delivery attempt
/// (1 = first delivery to the group).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub value: String,
    pub queue: u32,
    pub offset: u64,
    pub attempt: u32,
}

/// A message as read back: where and what.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Read {
    pub queue: u32,
    pub offset: u64,
    pub value: String,
}

/// A commitlog record digest (from the admin LogDigest call).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub index: u64,
    pub term: u64,
    pub kind: u32,
    pub crc: u32,
    pub len: u32,
}

/// One node's own data read back after healing (admin ReadLocal and LogDigest, no forwarding).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub node: String,
    pub local: Vec<Read>,
    pub digests: Vec<Digest>,
    /// Set when the node could not be read (it then counts as divergent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What is read after the final heal: the whole topic through each node's v2 PullMessage (which
/// forwards to the leader), and each node's own state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalState {
    /// (reader label, everything it read).
    pub reads: Vec<(String, Vec<Read>)>,
    pub nodes: Vec<NodeState>,
}

pub fn write_history(path: &Path, ops: &[Op]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

pub fn read_history(path: &Path) -> anyhow::Result<Vec<Op>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut ops = Vec::new();
    for line in file.lines() {
        let line = line?;
        if !line.trim().is_empty() {
            ops.push(serde_json::from_str(&line)?);
        }
    }
    Ok(ops)
}
