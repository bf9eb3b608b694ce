//! AckMessage, ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue: receipt handles in,
//! consumer commands through the Raft log. A handle is refused (INVALID_RECEIPT_HANDLE) when it is
//! malformed, foreign, or superseded by a later delivery of the same message.
use raftmq_raft::consumer::{ConsumerCommand, ConsumerResponse, Delivery, DeliveryRef, HandleRefusal};

use crate::broker::{Broker, ProposeError};
use crate::messaging::convert::now_ms;
use crate::messaging::group::{group_name, group_not_found, propose};
use crate::messaging::receipt::{self, Scope};
use crate::messaging::receive::{dead_letter, invisible_ms};
use crate::status::{self, ApiError};
use crate::v2::{
    AckMessageRequest, AckMessageResponse, AckMessageResultEntry, ChangeInvisibleDurationRequest, ChangeInvisibleDurationResponse, Code,
    ForwardMessageToDeadLetterQueueRequest, ForwardMessageToDeadLetterQueueResponse, Resource,
};

/// Most entries in one AckMessage request.
pub const ACK_ENTRIES_MAX: usize = 1024;

fn refusal(why: HandleRefusal) -> ApiError {
    let message = match why {
        HandleRefusal::Superseded => "the receipt handle expired: the message was received again (or acked) since",
        HandleRefusal::NeverDelivered => "the receipt handle names no delivery of this group",
    };
    ApiError::new(Code::InvalidReceiptHandle, message)
}

/// (group, topic) of a call, checked: both well-formed, the topic and the group exist.
fn check_scope(broker: &Broker, group: Option<&Resource>, topic: Option<&Resource>) -> Result<(String, String), ApiError> {
    let group = group_name(group)?;
    let topic = topic.map(|t| t.name.clone()).unwrap_or_default();
    crate::messaging::pull::existing_topic(broker, &topic)?;
    if broker.state().group(&group).is_none() {
        return Err(group_not_found(&group));
    }
    Ok((group, topic))
}

pub async fn ack_message(broker: &Broker, request: AckMessageRequest) -> Result<AckMessageResponse, ProposeError> {
    let (group, topic) = check_scope(broker, request.group.as_ref(), request.topic.as_ref())?;
    if request.entries.is_empty() || request.entries.len() > ACK_ENTRIES_MAX {
        return Err(ApiError::bad_request(format!("{} entries; an ack carries 1 to {ACK_ENTRIES_MAX}", request.entries.len())).into());
    }
    let scope = Scope { broker_group: &broker.config.group, consumer_group: &group, topic: &topic };
    let decoded: Vec<Result<DeliveryRef, ApiError>> = request.entries.iter().map(|e| receipt::decode(&scope, &e.receipt_handle)).collect();
    let valid: Vec<DeliveryRef> = decoded.iter().filter_map(|d| d.as_ref().ok().copied()).collect();
    let mut outcomes = Vec::new().into_iter();
    if !valid.is_empty() {
        let command = ConsumerCommand::Ack { group: group.clone(), topic, deliveries: valid };
        match propose(broker, &group, command).await? {
            ConsumerResponse::Acked(results) => outcomes = results.into_iter(),
            other => return Err(ApiError::internal(format!("an ack answered {other:?}")).into()),
        }
    }
    let entries: Vec<AckMessageResultEntry> = request
        .entries
        .into_iter()
        .zip(decoded)
        .map(|(entry, decoded)| {
            let status = match decoded {
                Err(e) => e.status(),
                Ok(_) => match outcomes.next().expect("one outcome per valid handle") {
                    Ok(()) => status::ok(),
                    Err(why) => refusal(why).status(),
                },
            };
            AckMessageResultEntry { message_id: entry.message_id, receipt_handle: entry.receipt_handle, status: Some(status) }
        })
        .collect();
    let first = entries[0].status.clone().expect("set above");
    let status = if entries.iter().all(|e| e.status.as_ref().map(|s| s.code) == Some(first.code)) {
        first
    } else {
        status::status(Code::MultipleResults, "entries have different results")
    };
    Ok(AckMessageResponse { status: Some(status), entries })
}

pub async fn change_invisible_duration(broker: &Broker, request: ChangeInvisibleDurationRequest) -> Result<ChangeInvisibleDurationResponse, ProposeError> {
    let (group, topic) = check_scope(broker, request.group.as_ref(), request.topic.as_ref())?;
    let invisible_ms = invisible_ms(request.invisible_duration.as_ref(), true)?
        .ok_or_else(|| ApiError::new(Code::IllegalInvisibleTime, "invisible_duration is required"))?;
    let scope = Scope { broker_group: &broker.config.group, consumer_group: &group, topic: &topic };
    let delivery = receipt::decode(&scope, &request.receipt_handle)?;
    let command = ConsumerCommand::ChangeInvisible { group: group.clone(), topic: topic.clone(), delivery, invisible_ms, now_ms: now_ms() };
    match propose(broker, &group, command).await? {
        ConsumerResponse::InvisibleChanged(Ok(changed)) => {
            let new = DeliveryRef { queue_id: changed.queue_id, offset: changed.offset, nonce: changed.nonce };
            Ok(ChangeInvisibleDurationResponse { status: Some(status::ok()), receipt_handle: receipt::encode(&scope, new, changed.visible_at_ms) })
        }
        ConsumerResponse::InvisibleChanged(Err(why)) => Err(refusal(why).into()),
        other => Err(ApiError::internal(format!("a change of invisible duration answered {other:?}")).into()),
    }
}

/// A push consumer gave up on a message: it goes to the group's dead-letter topic.
pub async fn forward_to_dead_letter_queue(
    broker: &Broker,
    request: ForwardMessageToDeadLetterQueueRequest,
) -> Result<ForwardMessageToDeadLetterQueueResponse, ProposeError> {
    let (group, topic) = check_scope(broker, request.group.as_ref(), request.topic.as_ref())?;
    let scope = Scope { broker_group: &broker.config.group, consumer_group: &group, topic: &topic };
    let delivery = receipt::decode(&scope, &request.receipt_handle)?;
    let cursor = broker.state().cursor(&group, &topic, delivery.queue_id).ok_or(HandleRefusal::NeverDelivered);
    let inflight = match cursor.and_then(|c| c.delivery(&delivery).map(|d| d.copied())) {
        Ok(Some(inflight)) => inflight,
        // Acked already: nothing left to move.
        Ok(None) => return Err(refusal(HandleRefusal::Superseded).into()),
        Err(why) => return Err(refusal(why).into()),
    };
    let stored = broker.state().read_message(&topic, delivery.queue_id, delivery.offset).map_err(ApiError::internal)?;
    let Some(stored) = stored else {
        return Err(ApiError::new(Code::MessageNotFound, "the message was deleted by retention").into());
    };
    let delivery = Delivery {
        queue_id: delivery.queue_id,
        offset: delivery.offset,
        attempt: inflight.attempt + 1,
        nonce: delivery.nonce,
        visible_at_ms: inflight.visible_at_ms,
        exhausted: true,
    };
    dead_letter(broker, &group, &topic, delivery, stored).await?;
    Ok(ForwardMessageToDeadLetterQueueResponse { status: Some(status::ok()) })
}
