//! Long polls end before the client's own deadline.
//!
//! A client gives a receive (or pull) two numbers: `long_polling_timeout` in the request, and its
//! gRPC deadline in the `grpc-timeout` header. They need not leave room for each other: the
//! official Rust client 5.0.0 sets its deadline to exactly `long_polling_timeout`, so a poll
//! held for the whole `long_polling_timeout` always reaches the client after it gave up
//! (`Cancelled: Timeout expired` instead of MESSAGE_NOT_FOUND). The RocketMQ proxy does what we
//! do here: it shortens the poll to the time the call has left minus a reserve for the answer's
//! way back (`longPollingReserveTimeInMillis`).
//!
//! The shortened timeout is written into the request itself, so a follower that forwards the call
//! hands the leader the already-shortened poll.
use std::time::Duration;

use tonic::metadata::MetadataMap;

/// Kept free at the end of a client's deadline for the answer (and a forwarding hop) to travel.
pub const LONG_POLL_RESERVE: Duration = Duration::from_millis(500);

/// The client's deadline from the `grpc-timeout` header (gRPC over HTTP/2: at most 8 digits and a
/// unit, H M S m u n), or None when absent or malformed.
pub fn client_deadline(metadata: &MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `long_polling_timeout` shortened to end `LONG_POLL_RESERVE` before the client's deadline
/// (to zero, a single look, when the deadline is shorter than the reserve). Unchanged without a
/// deadline or when the poll already ends in time.
pub fn fit_long_poll(long_polling_timeout: &mut Option<prost_types::Duration>, metadata: &MetadataMap) {
    let Some(deadline) = client_deadline(metadata) else { return };
    let Some(requested) = long_polling_timeout.as_ref() else { return };
    let budget = deadline.saturating_sub(LONG_POLL_RESERVE);
    let requested_ms = (requested.seconds.max(0) as u128) * 1000 + (requested.nanos.max(0) as u128) / 1_000_000;
    if requested_ms > budget.as_millis() {
        *long_polling_timeout =
            Some(prost_types::Duration { seconds: budget.as_secs() as i64, nanos: budget.subsec_millis() as i32 * 1_000_000 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(timeout: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", timeout.parse().unwrap());
        m
    }

    fn secs(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds, nanos })
    }

    // Goal: every unit of the gRPC timeout header parses, and malformed ones are ignored.
    #[test]
    fn parses_grpc_timeout() {
        assert_eq!(client_deadline(&metadata("5S")), Some(Duration::from_secs(5)));
        assert_eq!(client_deadline(&metadata("4999m")), Some(Duration::from_millis(4999)));
        assert_eq!(client_deadline(&metadata("2M")), Some(Duration::from_secs(120)));
        assert_eq!(client_deadline(&metadata("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(client_deadline(&metadata("7000u")), Some(Duration::from_millis(7)));
        assert_eq!(client_deadline(&metadata("9n")), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "5", "5s", "123456789S", "-5S", "5 S"] {
            assert_eq!(client_deadline(&metadata(bad)), None, "{bad:?}");
        }
        assert_eq!(client_deadline(&MetadataMap::new()), None);
    }

    // Goal: the Rust client's case (deadline == long poll) ends the poll before the deadline;
    // polls that already fit, and calls without a deadline, are left alone.
    #[test]
    fn shortens_only_polls_that_outlast_the_deadline() {
        let mut poll = secs(5, 0);
        fit_long_poll(&mut poll, &metadata("5000m"));
        assert_eq!(poll, secs(4, 500_000_000));

        let mut poll = secs(5, 0);
        fit_long_poll(&mut poll, &metadata("8S"));
        assert_eq!(poll, secs(5, 0));

        let mut poll = secs(30, 0);
        fit_long_poll(&mut poll, &MetadataMap::new());
        assert_eq!(poll, secs(30, 0));

        let mut poll = secs(5, 0);
        fit_long_poll(&mut poll, &metadata("200m"));
        assert_eq!(poll, secs(0, 0));

        let mut none = None;
        fit_long_poll(&mut none, &metadata("1S"));
        assert_eq!(none, None);
    }
}
