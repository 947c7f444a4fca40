//! Why a registration failed: `sipload/sip/failures.py`'s `FailureReason`, the same values.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// Timer F fired: no final response.
    Timeout,
    /// Credentials answered with another challenge (wrong password).
    AuthRejected,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// A 423 that could not be satisfied.
    IntervalTooBrief,
    /// 5xx after the retries allowed.
    ServerError,
    /// Any other final response.
    UnexpectedStatus,
    /// The socket or connection failed.
    TransportError,
    /// The response could not be parsed.
    ParseError,
    /// No challenge with an algorithm we support.
    UnsupportedAuth,
    /// The run was stopped before an answer came.
    Interrupted,
}

impl FailureReason {
    pub const ALL: [FailureReason; 11] = [
        FailureReason::Timeout,
        FailureReason::AuthRejected,
        FailureReason::Forbidden,
        FailureReason::NotFound,
        FailureReason::IntervalTooBrief,
        FailureReason::ServerError,
        FailureReason::UnexpectedStatus,
        FailureReason::TransportError,
        FailureReason::ParseError,
        FailureReason::UnsupportedAuth,
        FailureReason::Interrupted,
    ];

    /// The Python enum's value.
    pub fn value(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::AuthRejected => "auth_rejected",
            FailureReason::Forbidden => "forbidden",
            FailureReason::NotFound => "not_found",
            FailureReason::IntervalTooBrief => "interval_too_brief",
            FailureReason::ServerError => "server_error",
            FailureReason::UnexpectedStatus => "unexpected_status",
            FailureReason::TransportError => "transport_error",
            FailureReason::ParseError => "parse_error",
            FailureReason::UnsupportedAuth => "unsupported_auth",
            FailureReason::Interrupted => "interrupted",
        }
    }

    /// A failure that may pass (no answer, a broken transport, a server error): a refresh that failed
    /// so is tried again later.
    pub fn may_pass(self) -> bool {
        matches!(self, FailureReason::Timeout | FailureReason::TransportError | FailureReason::ServerError)
    }
}
