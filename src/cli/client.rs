//! Our own v2 client code for the CLI (and `raftmq bench` later): endpoint lists, the headers the
//! protocol requires, and connecting to the first endpoint that answers.
use std::time::Duration;

use anyhow::{Context, bail};
use tonic::transport::{Channel, Endpoint};

use crate::admin_pb::admin_client::AdminClient;
use crate::limits::GRPC_MESSAGE_BYTES_MAX;
use crate::v2::messaging_service_client::MessagingServiceClient;

/// The largest HTTP/2 frame this client accepts (h2's default is 16 KiB). A pull's answer of
/// 1,024 x 1 KiB then comes in a few DATA frames instead of ~65, each one a frame the server's
/// connection task writes and this side's reads and hands on: read-back over one connection,
/// 5 alternating pairs, 283-432k -> 330-495k msgs/s.
const FRAME_BYTES_MAX: u32 = 1024 * 1024;

/// Parses `host:port` or several separated by `;`.
pub fn parse_endpoints(text: &str) -> anyhow::Result<Vec<String>> {
    let endpoints: Vec<String> = text.split(';').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect();
    if endpoints.is_empty() {
        bail!("--endpoint is empty; give host:port, or several separated by ';'");
    }
    for e in &endpoints {
        if e.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
            bail!("endpoint {e:?} is not host:port");
        }
    }
    Ok(endpoints)
}

/// Connects to the first endpoint that answers.
pub async fn connect(endpoints: &str) -> anyhow::Result<(String, Channel)> {
    let mut errors = Vec::new();
    for addr in parse_endpoints(endpoints)? {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .with_context(|| format!("bad endpoint {addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .max_frame_size(FRAME_BYTES_MAX);
        match endpoint.connect().await {
            Ok(channel) => return Ok((addr, channel)),
            Err(e) => errors.push(format!("{addr}: {}", error_chain(&e))),
        }
    }
    bail!("no endpoint answered ({}); is raftmq running there?", errors.join("; "))
}

/// An error with its causes ("transport error" alone says nothing; the cause says "Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub fn messaging(channel: Channel) -> MessagingServiceClient<Channel> {
    MessagingServiceClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

pub fn admin(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel).max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

/// A request carrying the headers the v2 protocol requires.
pub fn request<T>(client_id: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    if let Ok(v) = client_id.parse() {
        metadata.insert("x-mq-client-id", v);
    }
    metadata.insert("x-mq-language", tonic::metadata::MetadataValue::from_static("RUST"));
    metadata.insert("x-mq-protocol", tonic::metadata::MetadataValue::from_static("v2"));
    metadata.insert("x-mq-client-version", tonic::metadata::MetadataValue::from_static(env!("CARGO_PKG_VERSION")));
    request.set_timeout(Duration::from_secs(10));
    request
}

pub fn new_client_id() -> String {
    format!("raftmq-cli@{}@{}", std::process::id(), rand::random::<u32>())
}

/// A message id in the shape RocketMQ clients use (32 upper-case hex characters).
pub fn new_message_id() -> String {
    format!("{:032X}", rand::random::<u128>())
}

/// Fails with the server's message when a v2 status is not OK.
pub fn check_status(status: Option<&crate::v2::Status>, what: &str) -> anyhow::Result<()> {
    match status {
        Some(s) if s.code == crate::v2::Code::Ok as i32 => Ok(()),
        Some(s) => {
            let code = crate::v2::Code::try_from(s.code).map(|c| c.as_str_name().to_string()).unwrap_or(s.code.to_string());
            bail!("{what} failed: {code} ({}): {}", s.code, s.message)
        }
        None => bail!("{what} failed: the server sent no status"),
    }
}

/// A NORMAL message as our tools send it: identity encoding, born now at `born_host`. Callers add
/// tag, keys or properties on the returned value.
pub fn normal_message(topic: &str, body: bytes::Bytes, message_id: String, born_host: &str) -> crate::v2::Message {
    use crate::messaging::convert::{now_ms, timestamp_from_ms};
    use crate::v2::{Encoding, MessageType, Resource, SystemProperties};
    crate::v2::Message {
        topic: Some(Resource { resource_namespace: String::new(), name: topic.to_string() }),
        user_properties: Default::default(),
        system_properties: Some(SystemProperties {
            message_id,
            body_encoding: Encoding::Identity as i32,
            message_type: MessageType::Normal as i32,
            born_timestamp: Some(timestamp_from_ms(now_ms())),
            born_host: born_host.to_string(),
            ..Default::default()
        }),
        body,
    }
}
