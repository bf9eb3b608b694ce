//! Admin calls the leader serves: run here when this node leads, otherwise forwarded once to the
//! leader. A forwarded call carries a marker, so a node that was told it leads but no longer does
//! answers "retry" instead of forwarding again (no forwarding loops during an election).
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::admin_pb::admin_client::AdminClient;
use crate::admin_pb::*;
use crate::broker::{Broker, NotServed};
use crate::messaging::forward::FORWARDED_HEADER;
use crate::status::ApiError;

const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// An admin answer built from its status alone (an error, or an OK write).
pub trait FromStatus: Default {
    fn from_status(status: Option<AdminStatus>) -> Self;

    fn from_result(result: Result<(), ApiError>) -> Self {
        Self::from_status(super::admin_status(result))
    }
}

macro_rules! from_status {
    ($($t:ty),*) => { $(impl FromStatus for $t {
        fn from_status(status: Option<AdminStatus>) -> Self { Self { status, ..Default::default() } }
    })* };
}
from_status!(AdminResult, CreateTopicResponse, DescribeTopicResponse, ListGroupsResponse, DescribeGroupResponse);

/// Runs `local` here if this node leads, else `remote` on the leader.
pub async fn on_leader<Req, Resp, L, LF, R, RF>(broker: &Arc<Broker>, request: Request<Req>, local: L, remote: R) -> Result<Response<Resp>, Status>
where
    Resp: FromStatus,
    L: FnOnce(Arc<Broker>, Req) -> LF,
    LF: Future<Output = Result<Resp, ApiError>>,
    R: FnOnce(AdminClient<Channel>, Request<Req>) -> RF,
    RF: Future<Output = Result<Response<Resp>, Status>>,
{
    let forwarded = request.metadata().contains_key(FORWARDED_HEADER);
    let request = request.into_inner();
    let result = match broker.check_leader() {
        Ok(()) => local(broker.clone(), request).await,
        Err(NotServed::Error(e)) => Err(e),
        Err(NotServed::Leader(_)) if forwarded => Err(ApiError::unavailable("leadership is moving; retry")),
        Err(NotServed::Leader(addr)) => {
            let channel = broker.channel_to(&addr).map_err(|e| Status::unavailable(e.message))?;
            let mut forward = Request::new(request);
            forward.metadata_mut().insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
            forward.set_timeout(FORWARD_TIMEOUT);
            let client = AdminClient::new(channel).max_decoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX);
            return remote(client, forward).await;
        }
    };
    Ok(Response::new(result.unwrap_or_else(|e| Resp::from_result(Err(e)))))
}
