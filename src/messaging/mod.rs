//! The apache.rocketmq.v2 MessagingService, on every node. Writes and reads go to the leader: a
//! follower forwards the call (unary and streaming alike) with the client's metadata. Route,
//! heartbeat and telemetry are answered by any node.
pub mod convert;
pub mod filter;
pub mod pull;
pub mod route;
pub mod send;
pub mod telemetry;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status as GrpcStatus, Streaming};

use crate::broker::{Broker, NotServed};
use crate::status::{self, ApiError};
use crate::v2::messaging_service_client::MessagingServiceClient;
use crate::v2::messaging_service_server::MessagingService;
use crate::v2::*;

/// Set on calls a follower forwards, so that a forwarded call is never forwarded again.
const FORWARDED_HEADER: &str = "x-raftmq-forwarded";
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
const TELEMETRY_CHANNEL_CAPACITY: usize = 16;

pub struct MessagingServiceImpl {
    pub broker: Arc<Broker>,
}

fn client_id(metadata: &MetadataMap) -> Result<String, ApiError> {
    match metadata.get("x-mq-client-id").and_then(|v| v.to_str().ok()) {
        Some(id) if !id.trim().is_empty() => Ok(id.to_string()),
        _ => Err(ApiError::new(Code::ClientIdRequired, "the x-mq-client-id header is required")),
    }
}

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

macro_rules! unary_error {
    ($response:ident, $error:expr) => {
        Ok(Response::new($response { status: Some($error.status()), ..Default::default() }))
    };
}

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send + 'static>>;

impl MessagingServiceImpl {
    /// Where a leader-only call goes: Ok(None) = serve here, Ok(Some(client)) = forward.
    fn route_to_leader(&self, metadata: &MetadataMap) -> Result<Option<MessagingServiceClient<tonic::transport::Channel>>, ApiError> {
        match self.broker.check_leader() {
            Ok(()) => Ok(None),
            Err(NotServed::Error(e)) => Err(e),
            Err(NotServed::Leader(_)) if metadata.contains_key(FORWARDED_HEADER) => {
                Err(ApiError::unavailable("leadership is moving; retry shortly"))
            }
            Err(NotServed::Leader(addr)) => {
                let channel = self.broker.channel_to(&addr)?;
                Ok(Some(
                    MessagingServiceClient::new(channel)
                        .max_decoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX)
                        .max_encoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX),
                ))
            }
        }
    }

    fn forwarded<T>(metadata: &MetadataMap, message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        *request.metadata_mut() = forward_metadata(metadata);
        request.set_timeout(timeout);
        request
    }

    async fn forward_send(&self, metadata: &MetadataMap, message: SendMessageRequest) -> Result<SendMessageResponse, ApiError> {
        match self.route_to_leader(metadata)? {
            None => Err(ApiError::unavailable("leadership moved while sending; retry")),
            Some(mut client) => client
                .send_message(Self::forwarded(metadata, message, FORWARD_TIMEOUT))
                .await
                .map(Response::into_inner)
                .map_err(|e| ApiError::unavailable(format!("forwarding to the leader failed: {}", e.message()))),
        }
    }
}

fn single_frame_stream<T: Send + 'static>(frames: Vec<T>) -> BoxedStream<T> {
    Box::pin(futures::stream::iter(frames.into_iter().map(Ok)))
}

#[tonic::async_trait]
impl MessagingService for MessagingServiceImpl {
    async fn query_route(&self, request: Request<QueryRouteRequest>) -> Result<Response<QueryRouteResponse>, GrpcStatus> {
        if let Err(e) = client_id(request.metadata()) {
            return unary_error!(QueryRouteResponse, e);
        }
        match route::query_route(&self.broker, request.into_inner()) {
            Ok(response) => Ok(Response::new(response)),
            Err(e) => unary_error!(QueryRouteResponse, e),
        }
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, GrpcStatus> {
        let status = match client_id(request.metadata()) {
            Ok(_) => status::ok(),
            Err(e) => e.status(),
        };
        Ok(Response::new(HeartbeatResponse { status: Some(status) }))
    }

    async fn send_message(&self, request: Request<SendMessageRequest>) -> Result<Response<SendMessageResponse>, GrpcStatus> {
        let (metadata, _, message) = request.into_parts();
        if let Err(e) = client_id(&metadata) {
            return unary_error!(SendMessageResponse, e);
        }
        let result = match self.route_to_leader(&metadata) {
            Err(e) => Err(e),
            Ok(Some(_)) => self.forward_send(&metadata, message).await,
            Ok(None) => match send::send_message(&self.broker, message.clone()).await {
                Ok(send::SendOutcome::Done(response)) => Ok(response),
                // Leadership moved before the write was accepted: nothing was written.
                Ok(send::SendOutcome::NotLeader) => self.forward_send(&metadata, message).await,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(response) => Ok(Response::new(response)),
            Err(e) => unary_error!(SendMessageResponse, e),
        }
    }

    async fn query_assignment(&self, _request: Request<QueryAssignmentRequest>) -> Result<Response<QueryAssignmentResponse>, GrpcStatus> {
        unary_error!(QueryAssignmentResponse, ApiError::new(Code::NotImplemented, "push consumers are not supported yet"))
    }

    type ReceiveMessageStream = BoxedStream<ReceiveMessageResponse>;

    async fn receive_message(&self, _request: Request<ReceiveMessageRequest>) -> Result<Response<Self::ReceiveMessageStream>, GrpcStatus> {
        let status = ApiError::new(Code::NotImplemented, "simple consumers are not supported yet").status();
        let frame = ReceiveMessageResponse { content: Some(receive_message_response::Content::Status(status)) };
        Ok(Response::new(single_frame_stream(vec![frame])))
    }

    async fn ack_message(&self, _request: Request<AckMessageRequest>) -> Result<Response<AckMessageResponse>, GrpcStatus> {
        unary_error!(AckMessageResponse, ApiError::new(Code::NotImplemented, "acks are not supported yet"))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        _request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, GrpcStatus> {
        unary_error!(ForwardMessageToDeadLetterQueueResponse, ApiError::new(Code::NotImplemented, "dead-letter queues are not supported yet"))
    }

    type PullMessageStream = BoxedStream<PullMessageResponse>;

    async fn pull_message(&self, request: Request<PullMessageRequest>) -> Result<Response<Self::PullMessageStream>, GrpcStatus> {
        let (metadata, _, message) = request.into_parts();
        let error_frames = |e: ApiError| {
            vec![PullMessageResponse { content: Some(pull_message_response::Content::Status(e.status())) }]
        };
        if let Err(e) = client_id(&metadata) {
            return Ok(Response::new(single_frame_stream(error_frames(e))));
        }
        match self.route_to_leader(&metadata) {
            Err(e) => Ok(Response::new(single_frame_stream(error_frames(e)))),
            Ok(None) => {
                let frames = pull::pull_message(&self.broker, message).await.unwrap_or_else(error_frames);
                Ok(Response::new(single_frame_stream(frames)))
            }
            Ok(Some(mut client)) => {
                let timeout = FORWARD_TIMEOUT + Duration::from_millis(crate::limits::LONG_POLL_MS_MAX);
                match client.pull_message(Self::forwarded(&metadata, message, timeout)).await {
                    Ok(stream) => Ok(Response::new(Box::pin(stream.into_inner()))),
                    Err(e) => Ok(Response::new(single_frame_stream(error_frames(ApiError::unavailable(format!(
                        "forwarding to the leader failed: {}",
                        e.message()
                    )))))),
                }
            }
        }
    }

    async fn update_offset(&self, _request: Request<UpdateOffsetRequest>) -> Result<Response<UpdateOffsetResponse>, GrpcStatus> {
        unary_error!(UpdateOffsetResponse, ApiError::new(Code::NotImplemented, "committed group offsets are not supported yet"))
    }

    async fn get_offset(&self, request: Request<GetOffsetRequest>) -> Result<Response<GetOffsetResponse>, GrpcStatus> {
        if let Err(e) = client_id(request.metadata()) {
            return unary_error!(GetOffsetResponse, e);
        }
        let request = request.into_inner();
        if let Err(e) = pull::check_queue(&self.broker, request.message_queue.as_ref()) {
            return unary_error!(GetOffsetResponse, e);
        }
        // No group has committed offsets until UpdateOffset exists.
        unary_error!(GetOffsetResponse, ApiError::new(Code::OffsetNotFound, "the group has no committed offset for this queue"))
    }

    async fn query_offset(&self, request: Request<QueryOffsetRequest>) -> Result<Response<QueryOffsetResponse>, GrpcStatus> {
        let (metadata, _, message) = request.into_parts();
        if let Err(e) = client_id(&metadata) {
            return unary_error!(QueryOffsetResponse, e);
        }
        let result = match self.route_to_leader(&metadata) {
            Err(e) => Err(e),
            Ok(None) => pull::query_offset(&self.broker, message),
            Ok(Some(mut client)) => client
                .query_offset(Self::forwarded(&metadata, message, FORWARD_TIMEOUT))
                .await
                .map(Response::into_inner)
                .map_err(|e| ApiError::unavailable(format!("forwarding to the leader failed: {}", e.message()))),
        };
        match result {
            Ok(response) => Ok(Response::new(response)),
            Err(e) => unary_error!(QueryOffsetResponse, e),
        }
    }

    async fn end_transaction(&self, _request: Request<EndTransactionRequest>) -> Result<Response<EndTransactionResponse>, GrpcStatus> {
        unary_error!(EndTransactionResponse, ApiError::new(Code::NotImplemented, "transactions are not supported yet"))
    }

    type TelemetryStream = BoxedStream<TelemetryCommand>;

    async fn telemetry(&self, request: Request<Streaming<TelemetryCommand>>) -> Result<Response<Self::TelemetryStream>, GrpcStatus> {
        let (tx, rx) = mpsc::channel(TELEMETRY_CHANNEL_CAPACITY);
        let max_body_bytes = self.broker.config.max_body_bytes;
        if let Err(e) = client_id(request.metadata()) {
            let _ = tx.try_send(Ok(TelemetryCommand { status: Some(e.status()), command: None }));
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Some(Ok(command)) = inbound.next().await {
                if let Some(reply) = telemetry::reply(command, max_body_bytes) {
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn notify_client_termination(
        &self,
        _request: Request<NotifyClientTerminationRequest>,
    ) -> Result<Response<NotifyClientTerminationResponse>, GrpcStatus> {
        Ok(Response::new(NotifyClientTerminationResponse { status: Some(status::ok()) }))
    }

    async fn change_invisible_duration(
        &self,
        _request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, GrpcStatus> {
        unary_error!(ChangeInvisibleDurationResponse, ApiError::new(Code::NotImplemented, "simple consumers are not supported yet"))
    }

    async fn recall_message(&self, _request: Request<RecallMessageRequest>) -> Result<Response<RecallMessageResponse>, GrpcStatus> {
        unary_error!(RecallMessageResponse, ApiError::new(Code::NotImplemented, "recall is not supported"))
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<SyncLiteSubscriptionRequest>,
    ) -> Result<Response<SyncLiteSubscriptionResponse>, GrpcStatus> {
        unary_error!(SyncLiteSubscriptionResponse, ApiError::new(Code::NotImplemented, "lite topics are not supported"))
    }
}
