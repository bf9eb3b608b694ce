//! apache.rocketmq.v2 on the router: what a client asks its access point (QueryRoute,
//! Heartbeat, Telemetry, NotifyClientTermination). Data calls belong to the broker endpoints
//! listed in routes; here they get NOT_IMPLEMENTED saying so.
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt, future::ready};
use tonic::{Request, Response, Status as GrpcStatus, Streaming};

use super::RouterState;
use crate::messaging::{client_id, route, telemetry};
use crate::status::{self, ApiError};
use crate::v2::messaging_service_server::MessagingService;
use crate::v2::*;

pub struct RouterMessagingService {
    pub state: Arc<RouterState>,
}

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send + 'static>>;

fn use_a_broker(what: &str) -> Option<Status> {
    Some(ApiError::new(Code::NotImplemented, format!("this is a router: send {what} to a broker endpoint listed in the topic's route")).status())
}

fn one_frame<T: Send + 'static>(frame: T) -> BoxedStream<T> {
    Box::pin(futures::stream::once(ready(Ok(frame))))
}

impl RouterMessagingService {
    fn query_route_here(&self, request: &Request<QueryRouteRequest>) -> Result<QueryRouteResponse, ApiError> {
        client_id(request.metadata())?;
        let topic = route::requested_topic(request.get_ref())?;
        let groups = self.state.registry.lock().route(&topic.name, Instant::now());
        if groups.is_empty() {
            return Err(route::topic_not_found(&topic.name));
        }
        Ok(route::route_response(&topic, &groups))
    }
}

#[tonic::async_trait]
impl MessagingService for RouterMessagingService {
    async fn query_route(&self, request: Request<QueryRouteRequest>) -> Result<Response<QueryRouteResponse>, GrpcStatus> {
        Ok(Response::new(self.query_route_here(&request).unwrap_or_else(|e| QueryRouteResponse { status: Some(e.status()), message_queues: vec![] })))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, GrpcStatus> {
        let status = client_id(request.metadata()).map_or_else(|e| e.status(), |_| status::ok());
        Ok(Response::new(HeartbeatResponse { status: Some(status) }))
    }

    type TelemetryStream = BoxedStream<TelemetryCommand>;

    /// Settings replies (with the smallest body limit of the live nodes) for as long as the client keeps the stream.
    async fn telemetry(&self, request: Request<Streaming<TelemetryCommand>>) -> Result<Response<Self::TelemetryStream>, GrpcStatus> {
        if let Err(e) = client_id(request.metadata()) {
            return Ok(Response::new(one_frame(TelemetryCommand { status: Some(e.status()), command: None })));
        }
        let max_body_bytes = self.state.max_body_bytes();
        let replies = request
            .into_inner()
            .take_while(|command| ready(command.is_ok()))
            .filter_map(move |command| ready(command.ok().and_then(|c| telemetry::reply(c, max_body_bytes, None)).map(Ok)));
        Ok(Response::new(Box::pin(replies)))
    }

    async fn notify_client_termination(
        &self,
        _request: Request<NotifyClientTerminationRequest>,
    ) -> Result<Response<NotifyClientTerminationResponse>, GrpcStatus> {
        Ok(Response::new(NotifyClientTerminationResponse { status: Some(status::ok()) }))
    }

    async fn send_message(&self, _request: Request<SendMessageRequest>) -> Result<Response<SendMessageResponse>, GrpcStatus> {
        Ok(Response::new(SendMessageResponse { status: use_a_broker("SendMessage"), entries: vec![] }))
    }

    async fn query_assignment(&self, _request: Request<QueryAssignmentRequest>) -> Result<Response<QueryAssignmentResponse>, GrpcStatus> {
        Ok(Response::new(QueryAssignmentResponse { status: use_a_broker("QueryAssignment"), ..Default::default() }))
    }

    type ReceiveMessageStream = BoxedStream<ReceiveMessageResponse>;

    async fn receive_message(&self, _request: Request<ReceiveMessageRequest>) -> Result<Response<Self::ReceiveMessageStream>, GrpcStatus> {
        let status = use_a_broker("ReceiveMessage").map(receive_message_response::Content::Status);
        Ok(Response::new(one_frame(ReceiveMessageResponse { content: status })))
    }

    async fn ack_message(&self, _request: Request<AckMessageRequest>) -> Result<Response<AckMessageResponse>, GrpcStatus> {
        Ok(Response::new(AckMessageResponse { status: use_a_broker("AckMessage"), ..Default::default() }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        _request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, GrpcStatus> {
        Ok(Response::new(ForwardMessageToDeadLetterQueueResponse { status: use_a_broker("ForwardMessageToDeadLetterQueue") }))
    }

    type PullMessageStream = BoxedStream<PullMessageResponse>;

    async fn pull_message(&self, _request: Request<PullMessageRequest>) -> Result<Response<Self::PullMessageStream>, GrpcStatus> {
        let status = use_a_broker("PullMessage").map(pull_message_response::Content::Status);
        Ok(Response::new(one_frame(PullMessageResponse { content: status })))
    }

    async fn update_offset(&self, _request: Request<UpdateOffsetRequest>) -> Result<Response<UpdateOffsetResponse>, GrpcStatus> {
        Ok(Response::new(UpdateOffsetResponse { status: use_a_broker("UpdateOffset") }))
    }

    async fn get_offset(&self, _request: Request<GetOffsetRequest>) -> Result<Response<GetOffsetResponse>, GrpcStatus> {
        Ok(Response::new(GetOffsetResponse { status: use_a_broker("GetOffset"), ..Default::default() }))
    }

    async fn query_offset(&self, _request: Request<QueryOffsetRequest>) -> Result<Response<QueryOffsetResponse>, GrpcStatus> {
        Ok(Response::new(QueryOffsetResponse { status: use_a_broker("QueryOffset"), ..Default::default() }))
    }

    async fn end_transaction(&self, _request: Request<EndTransactionRequest>) -> Result<Response<EndTransactionResponse>, GrpcStatus> {
        Ok(Response::new(EndTransactionResponse { status: use_a_broker("EndTransaction") }))
    }

    async fn change_invisible_duration(
        &self,
        _request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, GrpcStatus> {
        Ok(Response::new(ChangeInvisibleDurationResponse { status: use_a_broker("ChangeInvisibleDuration"), ..Default::default() }))
    }

    async fn recall_message(&self, _request: Request<RecallMessageRequest>) -> Result<Response<RecallMessageResponse>, GrpcStatus> {
        Ok(Response::new(RecallMessageResponse { status: use_a_broker("RecallMessage"), ..Default::default() }))
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<SyncLiteSubscriptionRequest>,
    ) -> Result<Response<SyncLiteSubscriptionResponse>, GrpcStatus> {
        Ok(Response::new(SyncLiteSubscriptionResponse { status: use_a_broker("SyncLiteSubscription") }))
    }
}
