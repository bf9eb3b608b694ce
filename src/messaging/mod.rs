//! The apache.rocketmq.v2 MessagingService, on every node. Writes, pops, acks and offset calls go
//! to the leader: a follower forwards them (unary and streaming alike, see forward.rs). Route,
//! heartbeat and telemetry are answered by any node.
pub mod ack;
pub mod batcher;
pub mod convert;
pub mod deadline;
pub mod filter;
pub mod forward;
pub mod group;
pub mod pull;
pub mod receipt;
pub mod receive;
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

use crate::broker::Broker;
use crate::messaging::forward::{Call, FORWARD_TIMEOUT, collect};
use crate::status::{self, ApiError};
use crate::v2::messaging_service_server::MessagingService;
use crate::v2::*;

const TELEMETRY_CHANNEL_CAPACITY: usize = 16;
/// A forwarded long poll may take this much longer than a plain call.
const LONG_POLL_FORWARD_TIMEOUT: Duration = Duration::from_millis(FORWARD_TIMEOUT.as_millis() as u64 + crate::limits::LONG_POLL_MS_MAX);

pub struct MessagingServiceImpl {
    pub broker: Arc<Broker>,
}

pub(crate) fn client_id(metadata: &MetadataMap) -> Result<String, ApiError> {
    match metadata.get("x-mq-client-id").and_then(|v| v.to_str().ok()) {
        Some(id) if !id.trim().is_empty() => Ok(id.to_string()),
        _ => Err(ApiError::new(Code::ClientIdRequired, "the x-mq-client-id header is required")),
    }
}

macro_rules! unary_error {
    ($response:ident, $error:expr) => {
        Ok(Response::new($response { status: Some($error.status()), ..Default::default() }))
    };
}

/// Answers a unary leader-only call: checks the client id, then runs it on the leader.
macro_rules! leader_unary {
    ($self:ident, $request:ident, $response:ident, $idempotent:expr, $local:expr, $remote:ident) => {{
        let (metadata, _, message) = $request.into_parts();
        if let Err(e) = client_id(&metadata) {
            return unary_error!($response, e);
        }
        let call = Call { broker: &$self.broker, metadata: &metadata, timeout: FORWARD_TIMEOUT, idempotent: $idempotent };
        let remote = |mut client: crate::v2::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>, request| async move {
            client.$remote(request).await.map(Response::into_inner)
        };
        match call.on_leader(message, $local, remote).await {
            Ok(response) => Ok(Response::new(response)),
            Err(e) => unary_error!($response, e),
        }
    }};
}

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send + 'static>>;

fn frames_stream<T: Send + 'static>(frames: Vec<T>) -> BoxedStream<T> {
    Box::pin(futures::stream::iter(frames.into_iter().map(Ok)))
}

#[tonic::async_trait]
impl MessagingService for MessagingServiceImpl {
    async fn query_route(&self, request: Request<QueryRouteRequest>) -> Result<Response<QueryRouteResponse>, GrpcStatus> {
        if let Err(e) = client_id(request.metadata()) {
            return unary_error!(QueryRouteResponse, e);
        }
        match route::query_route(&self.broker, request.into_inner()).await {
            Ok(response) => Ok(Response::new(response)),
            Err(e) => unary_error!(QueryRouteResponse, e),
        }
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, GrpcStatus> {
        let status = match client_id(request.metadata()) {
            Ok(client) => {
                let heartbeat = request.get_ref();
                self.broker.members.seen(heartbeat.group.as_ref().map_or("", |g| g.name.as_str()), &client, heartbeat.client_type);
                status::ok()
            }
            Err(e) => e.status(),
        };
        Ok(Response::new(HeartbeatResponse { status: Some(status) }))
    }

    async fn send_message(&self, request: Request<SendMessageRequest>) -> Result<Response<SendMessageResponse>, GrpcStatus> {
        // Not idempotent: a send whose forwarding broke may have been written, so it is not retried.
        leader_unary!(self, request, SendMessageResponse, false, |b: Arc<Broker>, m: Arc<SendMessageRequest>| async move { send::send_message(&b, &m).await }, send_message)
    }

    async fn query_assignment(&self, request: Request<QueryAssignmentRequest>) -> Result<Response<QueryAssignmentResponse>, GrpcStatus> {
        if let Err(e) = client_id(request.metadata()) {
            return unary_error!(QueryAssignmentResponse, e);
        }
        match group::query_assignment(&self.broker, request.into_inner()).await {
            Ok(response) => Ok(Response::new(response)),
            Err(e) => unary_error!(QueryAssignmentResponse, e),
        }
    }

    type ReceiveMessageStream = BoxedStream<ReceiveMessageResponse>;

    async fn receive_message(&self, request: Request<ReceiveMessageRequest>) -> Result<Response<Self::ReceiveMessageStream>, GrpcStatus> {
        let (metadata, _, mut message) = request.into_parts();
        match client_id(&metadata) {
            // A forwarded receive's client talks to the forwarding node, which recorded it.
            Ok(_) if metadata.contains_key(forward::FORWARDED_HEADER) => {}
            Ok(client) => self.broker.members.seen(message.group.as_ref().map_or("", |g| g.name.as_str()), &client, 0),
            Err(e) => return Ok(Response::new(frames_stream(receive::error_frames(e)))),
        }
        deadline::fit_long_poll(&mut message.long_polling_timeout, &metadata);
        // A retried pop at worst leaves the first try's messages in flight until their invisible
        // time passes: they are handed out again then, never lost.
        let call = Call { broker: &self.broker, metadata: &metadata, timeout: LONG_POLL_FORWARD_TIMEOUT, idempotent: true };
        let local = |b: Arc<Broker>, m| async move { receive::receive_message(&b, Arc::unwrap_or_clone(m)).await };
        let remote = |mut client: crate::v2::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>, request| async move {
            collect(client.receive_message(request).await).await
        };
        let frames = call.on_leader(message, local, remote).await.unwrap_or_else(receive::error_frames);
        Ok(Response::new(frames_stream(frames)))
    }

    async fn ack_message(&self, request: Request<AckMessageRequest>) -> Result<Response<AckMessageResponse>, GrpcStatus> {
        leader_unary!(self, request, AckMessageResponse, true, |b: Arc<Broker>, m| async move { ack::ack_message(&b, Arc::unwrap_or_clone(m)).await }, ack_message)
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, GrpcStatus> {
        leader_unary!(
            self,
            request,
            ForwardMessageToDeadLetterQueueResponse,
            false,
            |b: Arc<Broker>, m| async move { ack::forward_to_dead_letter_queue(&b, Arc::unwrap_or_clone(m)).await },
            forward_message_to_dead_letter_queue
        )
    }

    type PullMessageStream = BoxedStream<PullMessageResponse>;

    async fn pull_message(&self, request: Request<PullMessageRequest>) -> Result<Response<Self::PullMessageStream>, GrpcStatus> {
        let (metadata, _, mut message) = request.into_parts();
        let error_frames = |e: ApiError| vec![PullMessageResponse { content: Some(pull_message_response::Content::Status(e.status())) }];
        if let Err(e) = client_id(&metadata) {
            return Ok(Response::new(frames_stream(error_frames(e))));
        }
        deadline::fit_long_poll(&mut message.long_polling_timeout, &metadata);
        let call = Call { broker: &self.broker, metadata: &metadata, timeout: LONG_POLL_FORWARD_TIMEOUT, idempotent: true };
        let local = |b: Arc<Broker>, m| async move { pull::pull_message(&b, Arc::unwrap_or_clone(m)).await.map_err(Into::into) };
        let remote = |mut client: crate::v2::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>, request| async move {
            collect(client.pull_message(request).await).await
        };
        let frames = call.on_leader(message, local, remote).await.unwrap_or_else(error_frames);
        Ok(Response::new(frames_stream(frames)))
    }

    async fn update_offset(&self, request: Request<UpdateOffsetRequest>) -> Result<Response<UpdateOffsetResponse>, GrpcStatus> {
        leader_unary!(self, request, UpdateOffsetResponse, true, |b: Arc<Broker>, m| async move { group::update_offset(&b, Arc::unwrap_or_clone(m)).await }, update_offset)
    }

    async fn get_offset(&self, request: Request<GetOffsetRequest>) -> Result<Response<GetOffsetResponse>, GrpcStatus> {
        leader_unary!(self, request, GetOffsetResponse, true, |b: Arc<Broker>, m| async move { group::get_offset(&b, Arc::unwrap_or_clone(m)).map_err(Into::into) }, get_offset)
    }

    async fn query_offset(&self, request: Request<QueryOffsetRequest>) -> Result<Response<QueryOffsetResponse>, GrpcStatus> {
        leader_unary!(self, request, QueryOffsetResponse, true, |b: Arc<Broker>, m| async move { pull::query_offset(&b, Arc::unwrap_or_clone(m)).map_err(Into::into) }, query_offset)
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, GrpcStatus> {
        leader_unary!(
            self,
            request,
            ChangeInvisibleDurationResponse,
            true,
            |b: Arc<Broker>, m| async move { ack::change_invisible_duration(&b, Arc::unwrap_or_clone(m)).await },
            change_invisible_duration
        )
    }

    async fn end_transaction(&self, _request: Request<EndTransactionRequest>) -> Result<Response<EndTransactionResponse>, GrpcStatus> {
        unary_error!(EndTransactionResponse, ApiError::new(Code::NotImplemented, "transactions are not supported yet"))
    }

    type TelemetryStream = BoxedStream<TelemetryCommand>;

    async fn telemetry(&self, request: Request<Streaming<TelemetryCommand>>) -> Result<Response<Self::TelemetryStream>, GrpcStatus> {
        let (tx, rx) = mpsc::channel(TELEMETRY_CHANNEL_CAPACITY);
        let max_body_bytes = self.broker.config.max_body_bytes;
        let client = match client_id(request.metadata()) {
            Ok(client) => client,
            Err(e) => {
                let _ = tx.try_send(Ok(TelemetryCommand { status: Some(e.status()), command: None }));
                return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
            }
        };
        let mut inbound = request.into_inner();
        let broker = self.broker.clone();
        tokio::spawn(async move {
            while let Some(Ok(command)) = inbound.next().await {
                let mut group_config = None;
                if let Some((group, client_type)) = telemetry::consumer_group(&command) {
                    broker.members.seen(group, &client, client_type);
                    group_config = broker.state().group(group);
                }
                if let Some(reply) = telemetry::reply(command, max_body_bytes, group_config.as_ref()) {
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
