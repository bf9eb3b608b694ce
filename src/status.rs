//! The one place where errors become apache.rocketmq.v2 `Status` codes.
use crate::v2::{Code, Status};

/// A request failed with a v2 code and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(Code::InternalServerError, message.to_string())
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::HaNotAvailable, message)
    }
    pub fn status(&self) -> Status {
        Status { code: self.code as i32, message: self.message.clone() }
    }
}

pub fn ok() -> Status {
    Status { code: Code::Ok as i32, message: "OK".into() }
}

pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status { code: code as i32, message: message.into() }
}

/// Topic and group names: `^[%a-zA-Z0-9_-]+$`, bounded length.
pub fn check_name(name: &str, what: &str, max: usize, code: Code) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::new(code, format!("{what} name is empty")));
    }
    if name.len() > max {
        return Err(ApiError::new(code, format!("{what} name is longer than {max} characters")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '_' | '-'))) {
        return Err(ApiError::new(code, format!("{what} name {name:?} has the illegal character {c:?}; use [%a-zA-Z0-9_-]")));
    }
    Ok(())
}

pub fn check_topic_name(name: &str) -> Result<(), ApiError> {
    check_name(name, "topic", crate::limits::TOPIC_NAME_BYTES_MAX, Code::IllegalTopic)
}

pub fn check_group_name(name: &str) -> Result<(), ApiError> {
    check_name(name, "consumer group", crate::limits::GROUP_NAME_BYTES_MAX, Code::IllegalConsumerGroup)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: names outside RocketMQ's pattern are rejected with the caller's code.
    #[test]
    fn topic_names_follow_the_rocketmq_pattern() {
        assert!(check_topic_name("orders_2-%x").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(128)] {
            assert_eq!(check_topic_name(bad).unwrap_err().code, Code::IllegalTopic, "{bad:?}");
        }
    }
}
