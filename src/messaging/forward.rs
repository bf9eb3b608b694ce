//! Leader-only calls on any node: served here when this node leads, otherwise forwarded to the
//! leader with the client's headers (a forwarded call is never forwarded again). When leadership
//! moves during a call, the call is tried once more wherever it went, instead of failing the
//! client, but only where the first try certainly wrote nothing or the call is idempotent.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Status as GrpcStatus};

use crate::broker::{Broker, NotServed, ProposeError};
use crate::status::ApiError;
use crate::v2::messaging_service_client::MessagingServiceClient;
use crate::v2::*;

/// Set on calls a follower forwards (client and admin API alike), so that a forwarded call is
/// never forwarded again.
pub const FORWARDED_HEADER: &str = "x-raftmq-forwarded";
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a retry waits for the group to have a reachable leader again (failure detection plus
/// an election, with room to spare).
const LEADER_WAIT_MAX: Duration = Duration::from_millis(3000);
const LEADER_WAIT_STEP: Duration = Duration::from_millis(25);

/// The client's x-mq-* and authorization headers, marked as forwarded.
fn forward_metadata(metadata: &MetadataMap) -> MetadataMap {
    let mut out = MetadataMap::new();
    for entry in metadata.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry {
            if key.as_str().starts_with("x-mq-") || key.as_str() == "authorization" {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    out.insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    out
}

/// The business status of an answer, to see whether the leader refused it for lack of leadership.
pub trait Answer {
    fn code(&self) -> Option<i32>;
}

macro_rules! unary_answer {
    ($($t:ty),*) => { $(impl Answer for $t { fn code(&self) -> Option<i32> { self.status.as_ref().map(|s| s.code) } })* };
}
unary_answer!(
    SendMessageResponse,
    AckMessageResponse,
    ChangeInvisibleDurationResponse,
    ForwardMessageToDeadLetterQueueResponse,
    UpdateOffsetResponse,
    GetOffsetResponse,
    QueryOffsetResponse
);

impl Answer for Vec<ReceiveMessageResponse> {
    fn code(&self) -> Option<i32> {
        match self.first().and_then(|f| f.content.as_ref()) {
            Some(receive_message_response::Content::Status(s)) => Some(s.code),
            _ => None,
        }
    }
}

impl Answer for Vec<PullMessageResponse> {
    fn code(&self) -> Option<i32> {
        match self.first().and_then(|f| f.content.as_ref()) {
            Some(pull_message_response::Content::Status(s)) => Some(s.code),
            _ => None,
        }
    }
}

/// Collects a forwarded server stream (bounded by the request's batch size).
pub async fn collect<T>(stream: Result<tonic::Response<tonic::Streaming<T>>, GrpcStatus>) -> Result<Vec<T>, GrpcStatus> {
    let mut stream = stream?.into_inner();
    let mut frames = Vec::new();
    while let Some(frame) = stream.message().await? {
        frames.push(frame);
    }
    Ok(frames)
}

pub struct Call<'a> {
    pub broker: &'a Arc<Broker>,
    pub metadata: &'a MetadataMap,
    pub timeout: Duration,
    /// Trying it twice does no harm (reads, pops, acks); sends are not.
    pub idempotent: bool,
}

impl Call<'_> {
    /// Runs `local` here if this node leads, else `remote` on the leader; retries once as above.
    /// `local` gets the request shared, not copied: a send's messages are read in place (a copy
    /// per call was ~3% of a loaded leader's CPU, most of it freeing the copy).
    pub async fn on_leader<Req, Resp, L, LF, R, RF>(&self, request: Req, local: L, remote: R) -> Result<Resp, ApiError>
    where
        Req: Clone,
        Resp: Answer,
        L: Fn(Arc<Broker>, Arc<Req>) -> LF,
        LF: Future<Output = Result<Resp, ProposeError>>,
        R: Fn(MessagingServiceClient<Channel>, Request<Req>) -> RF,
        RF: Future<Output = Result<Resp, GrpcStatus>>,
    {
        let request = Arc::new(request);
        let mut last_error = None;
        // The leader a forward failed to reach: the retry waits for another one.
        let mut unreachable: Option<String> = None;
        for attempt in 0..2 {
            if attempt == 1 {
                self.wait_for_leader(unreachable.as_deref()).await;
            }
            match self.route()? {
                Route::Here => match local(self.broker.clone(), request.clone()).await {
                    Ok(response) => return Ok(response),
                    Err(ProposeError::Api(e)) => return Err(e),
                    // Refused before anything was written: leadership moved.
                    Err(ProposeError::NotLeader) => last_error = Some(ApiError::unavailable("leadership moved during the call; retry")),
                },
                Route::Retry(e) => last_error = Some(e),
                Route::Leader(addr, client) => {
                    let mut forwarded = Request::new(Req::clone(&request));
                    *forwarded.metadata_mut() = forward_metadata(self.metadata);
                    forwarded.set_timeout(self.timeout);
                    match remote(client, forwarded).await {
                        Ok(response) if response.code() == Some(Code::HaNotAvailable as i32) => {
                            last_error = Some(ApiError::unavailable("the leader lost its leadership during the call; retry"))
                        }
                        Ok(response) => return Ok(response),
                        Err(e) if self.idempotent => {
                            unreachable = Some(addr);
                            last_error = Some(ApiError::unavailable(format!("forwarding to the leader failed: {}", e.message())));
                        }
                        // The leader may have written it: the outcome is unknown, so no retry.
                        Err(e) => return Err(ApiError::unavailable(format!("forwarding to the leader failed: {}", e.message()))),
                    }
                }
            }
        }
        Err(last_error.expect("two attempts failed"))
    }

    fn route(&self) -> Result<Route, ApiError> {
        match self.broker.check_leader() {
            Ok(()) => Ok(Route::Here),
            Err(NotServed::Error(e)) if e.code == Code::HaNotAvailable => Ok(Route::Retry(e)),
            Err(NotServed::Error(e)) => Err(e),
            // This node was told it leads; it doesn't: leadership is moving.
            Err(NotServed::Leader(_)) if self.metadata.contains_key(FORWARDED_HEADER) => {
                Ok(Route::Retry(ApiError::unavailable("leadership is moving; retry shortly")))
            }
            Err(NotServed::Leader(addr)) => {
                let channel = self.broker.channel_to(&addr)?;
                Ok(Route::Leader(
                    addr,
                    MessagingServiceClient::new(channel)
                        .max_decoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX)
                        .max_encoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX),
                ))
            }
        }
    }

    /// Waits (bounded) until some node leads, other than `unreachable`, and this node knows how to
    /// reach it.
    async fn wait_for_leader(&self, unreachable: Option<&str>) {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT_MAX;
        while tokio::time::Instant::now() < deadline {
            match self.broker.check_leader() {
                Ok(()) => return,
                Err(NotServed::Leader(addr)) if !self.metadata.contains_key(FORWARDED_HEADER) && Some(addr.as_str()) != unreachable => return,
                _ => tokio::time::sleep(LEADER_WAIT_STEP).await,
            }
        }
    }
}

enum Route {
    Here,
    Leader(String, MessagingServiceClient<Channel>),
    Retry(ApiError),
}
