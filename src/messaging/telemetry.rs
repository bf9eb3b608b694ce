//! Telemetry: the client sends its Settings; we answer with them completed by the server's
//! values (the Python producer adopts `max_body_size`; consumers need batch size and long
//! polling). The stream stays open: it is also the server -> client command channel.
use prost_types::Duration;

use raftmq_raft::consumer::GroupConfig;

use crate::v2::{
    ClientType, CustomizedBackoff, ExponentialBackoff, Publishing, RetryPolicy, Settings, Subscription,
    TelemetryCommand, retry_policy, settings, telemetry_command,
};

pub const RECEIVE_BATCH_SIZE: i32 = 32;
pub const LONG_POLLING_TIMEOUT_S: i64 = 20;

fn default_backoff(max_attempts: i32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        strategy: Some(retry_policy::Strategy::ExponentialBackoff(ExponentialBackoff {
            initial: Some(Duration { seconds: 0, nanos: 10_000_000 }),
            max: Some(Duration { seconds: 1, nanos: 0 }),
            multiplier: 2.0,
        })),
    }
}

/// Completes the client's settings with the server's values; a consumer's FIFO flag and retry
/// limit come from its group's settings when the group is known here.
pub fn complete_settings(mut settings: Settings, max_body_bytes: usize, group: Option<&GroupConfig>) -> Settings {
    let client_type = settings.client_type.and_then(|t| ClientType::try_from(t).ok()).unwrap_or(ClientType::Unspecified);
    match settings.pub_sub.take() {
        Some(settings::PubSub::Publishing(publishing)) => {
            settings.pub_sub = Some(settings::PubSub::Publishing(Publishing {
                topics: publishing.topics,
                max_body_size: max_body_bytes as i32,
                validate_message_type: true,
            }));
        }
        Some(settings::PubSub::Subscription(subscription)) => {
            settings.pub_sub = Some(settings::PubSub::Subscription(Subscription {
                fifo: Some(group.map(|g| g.fifo).unwrap_or(subscription.fifo.unwrap_or(false))),
                receive_batch_size: Some(RECEIVE_BATCH_SIZE),
                long_polling_timeout: Some(Duration { seconds: LONG_POLLING_TIMEOUT_S, nanos: 0 }),
                ..subscription
            }));
        }
        None if client_type == ClientType::Producer => {
            settings.pub_sub = Some(settings::PubSub::Publishing(Publishing {
                topics: vec![],
                max_body_size: max_body_bytes as i32,
                validate_message_type: true,
            }));
        }
        None => {}
    }
    let attempts = match (client_type, group) {
        (ClientType::Producer, _) => 3,
        (_, Some(group)) => group.max_delivery_attempts as i32,
        _ => raftmq_raft::consumer::MAX_DELIVERY_ATTEMPTS_DEFAULT as i32,
    };
    let backoff = match settings.backoff_policy.take() {
        // The group's limit decides how often a consumer retries before dead-lettering.
        Some(policy) if group.is_some() => RetryPolicy { max_attempts: attempts, ..policy },
        Some(policy) if policy.strategy.is_some() => policy,
        Some(policy) if policy.max_attempts > 0 => default_backoff(policy.max_attempts),
        _ => default_backoff(attempts),
    };
    // A customized backoff with no steps would make clients retry at once; replace it.
    settings.backoff_policy = Some(match &backoff.strategy {
        Some(retry_policy::Strategy::CustomizedBackoff(CustomizedBackoff { next })) if next.is_empty() => default_backoff(backoff.max_attempts),
        _ => backoff,
    });
    settings
}

/// The reply to one client command, if it needs one.
pub fn reply(command: TelemetryCommand, max_body_bytes: usize, group: Option<&GroupConfig>) -> Option<TelemetryCommand> {
    match command.command {
        Some(telemetry_command::Command::Settings(settings)) => Some(TelemetryCommand {
            status: Some(crate::status::ok()),
            command: Some(telemetry_command::Command::Settings(complete_settings(settings, max_body_bytes, group))),
        }),
        _ => None,
    }
}

/// (group, client type) of a consumer's settings, so that the node counts it as a group member.
pub fn consumer_group(command: &TelemetryCommand) -> Option<(&str, i32)> {
    let Some(telemetry_command::Command::Settings(settings)) = &command.command else { return None };
    let Some(settings::PubSub::Subscription(subscription)) = &settings.pub_sub else { return None };
    Some((subscription.group.as_ref()?.name.as_str(), settings.client_type.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer_settings(fifo: bool) -> Settings {
        Settings {
            client_type: Some(ClientType::PushConsumer as i32),
            pub_sub: Some(settings::PubSub::Subscription(Subscription { fifo: Some(fifo), ..Default::default() })),
            ..Default::default()
        }
    }

    fn subscription(settings: &Settings) -> &Subscription {
        match &settings.pub_sub {
            Some(settings::PubSub::Subscription(s)) => s,
            other => panic!("not a subscription: {other:?}"),
        }
    }

    // Goal: a consumer learns its group's FIFO flag and retry limit from the server, and gets
    // the defaults when the group is not known here.
    #[test]
    fn consumer_settings_follow_the_group() {
        let group = GroupConfig { fifo: true, max_delivery_attempts: 3, ..GroupConfig::new("g") };
        let done = complete_settings(consumer_settings(false), 1024, Some(&group));
        assert_eq!(subscription(&done).fifo, Some(true));
        assert_eq!(done.backoff_policy.as_ref().map(|p| p.max_attempts), Some(3));
        assert_eq!(subscription(&done).receive_batch_size, Some(RECEIVE_BATCH_SIZE));
        let unknown = complete_settings(consumer_settings(false), 1024, None);
        assert_eq!(subscription(&unknown).fifo, Some(false));
        assert_eq!(unknown.backoff_policy.as_ref().map(|p| p.max_attempts), Some(16));
    }
}
