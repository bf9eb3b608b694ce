//! The logic behind the admin API's topic and consumer-group calls; admin_service.rs is the gRPC
//! face that routes each call here (via `forward` when the leader must serve it).
pub mod forward;
pub mod groups;
pub mod topics;

use raftmq_raft::{CommandResponse, EncodedCommand};

use crate::admin_pb::AdminStatus;
use crate::broker::{Broker, ProposeError};
use crate::status::ApiError;

pub fn admin_status(result: Result<(), ApiError>) -> Option<AdminStatus> {
    Some(match result {
        Ok(()) => AdminStatus { code: 0, message: "OK".into() },
        Err(e) => AdminStatus { code: e.code as i32, message: e.message },
    })
}

/// What a proposal error means to an admin caller: a lost leadership is worth a retry.
pub fn proposal_error(e: ProposeError) -> ApiError {
    match e {
        ProposeError::NotLeader => ApiError::unavailable("leadership moved; retry"),
        ProposeError::Api(e) => e,
    }
}

/// Proposes an admin command on the leader and waits until it is applied.
pub async fn propose(broker: &Broker, command: EncodedCommand) -> Result<CommandResponse, ApiError> {
    broker.propose(command).await.map_err(proposal_error)
}
