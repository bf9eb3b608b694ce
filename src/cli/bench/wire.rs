//! A lean gRPC unary caller for the bench's send path, straight over h2.
//!
//! Why not tonic here: hyper's client sends a unary request as three TCP writes (HEADERS, then
//! DATA once the connection task has assigned flow-control capacity to the new stream, then an
//! empty END_STREAM frame), because a stream cannot get capacity before its HEADERS go out. Each
//! write is a loopback segment that costs the client and wakes the server. The clients RocketMQ
//! users run (grpc-java over Netty, gRPC C-core under Python, C++, C#) write a unary request in
//! one go; so does this caller (`send_data(.., end_of_stream)` queued before the connection task
//! runs), so the bench's own CPU does not crowd out the three nodes on a shared machine.
//! Same protocol, same headers, same messages as the tonic client. Requests that producers
//! issue in the same scheduler turn share a write (cork.rs), as they do in those clients.
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use prost::Message;

use crate::limits::GRPC_MESSAGE_BYTES_MAX;

/// One HTTP/2 connection to a node's client API.
#[derive(Clone)]
pub struct WireChannel {
    sender: SendRequest<Bytes>,
    authority: String,
    client_id: http::HeaderValue,
}

impl WireChannel {
    pub async fn connect(addr: &str, client_id: &str) -> anyhow::Result<WireChannel> {
        let tcp = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .with_context(|| format!("{addr}: connect timed out"))?
            .with_context(|| format!("{addr}: connect failed"))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .max_frame_size(1 << 20)
            .handshake::<_, Bytes>(crate::cork::Corked::new(tcp))
            .await
            .with_context(|| format!("{addr}: HTTP/2 handshake failed"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let sender = sender.ready().await.with_context(|| format!("{addr}: connection not ready"))?;
        Ok(WireChannel { sender, authority: addr.to_string(), client_id: http::HeaderValue::from_str(client_id)? })
    }

    /// One unary call of `/apache.rocketmq.v2.MessagingService/{method}`.
    pub async fn unary<Req: Message, Resp: Message + Default>(&mut self, method: &str, message: &Req) -> anyhow::Result<Resp> {
        let mut body = BytesMut::with_capacity(5 + message.encoded_len());
        body.put_u8(0);
        body.put_u32(message.encoded_len() as u32);
        message.encode(&mut body)?;
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}/apache.rocketmq.v2.MessagingService/{method}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "10S")
            .header("x-mq-client-id", self.client_id.clone())
            .header("x-mq-language", "RUST")
            .header("x-mq-protocol", "v2")
            .header("x-mq-client-version", env!("CARGO_PKG_VERSION"))
            .body(())?;
        let sender = self.sender.clone();
        let mut sender = sender.ready().await?;
        let (response, mut stream) = sender.send_request(request, false)?;
        stream.send_data(body.freeze(), true)?;
        let response = response.await?;
        if response.status() != http::StatusCode::OK {
            bail!("{method}: HTTP status {}", response.status());
        }
        let grpc_status = |headers: &http::HeaderMap| {
            headers.get("grpc-status").map(|v| (v.to_str().unwrap_or("?").to_string(), headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("").to_string()))
        };
        // A trailers-only answer carries grpc-status in its headers.
        if let Some((code, text)) = grpc_status(response.headers()).filter(|(c, _)| c != "0") {
            bail!("{method}: grpc-status {code} {text}");
        }
        let mut recv = response.into_body();
        let mut data = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            if data.len() + chunk.len() > GRPC_MESSAGE_BYTES_MAX + 5 {
                bail!("{method}: response over {GRPC_MESSAGE_BYTES_MAX} bytes");
            }
            data.extend_from_slice(&chunk);
        }
        if let Some((code, text)) = recv.trailers().await?.as_ref().and_then(grpc_status).filter(|(c, _)| c != "0") {
            bail!("{method}: grpc-status {code} {text}");
        }
        if data.len() < 5 || data[0] != 0 {
            bail!("{method}: malformed gRPC response frame ({} bytes)", data.len());
        }
        let mut data = data.freeze();
        data.advance(1);
        let len = data.get_u32() as usize;
        if data.len() != len {
            bail!("{method}: gRPC frame says {len} bytes, got {}", data.len());
        }
        Ok(Resp::decode(data)?)
    }
}
