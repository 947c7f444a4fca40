//! The registration machine of one endpoint (RFC 3261 §10), sans-IO: `sipload/sip/registration.py`'s twin
//! for plain bindings (no RFC 5626 outbound, no RFC 5627 GRUU: those stay with the Python engine).
//!
//! The same table `(state, input) -> (handler, next states)` as Python's `_TABLE`, row for row: `dispatch`
//! looks the pair up (none: [`ProtocolError`]), runs the handler, and refuses a next state its row does not
//! list. Inputs: `start` / `stop`, a response (classified by status once the transaction passes it up),
//! the transaction's outcome without a response (TIMEOUT, TRANSPORT_ERROR) and the machine's own deadlines
//! (REFRESH_TIMER, BACKOFF_TIMER). Out: request bytes (`take_outgoing`) and events (`take_events`), with the
//! fields and order of the Python events. Time is a parameter (f64 seconds), as in Python.
//!
//! Randomness comes from an [`Ids`] source the caller gives: branches, cnonces and the refresh jitter are
//! drawn from it in the order the Python machine draws them from its `IdSource` (one branch per request
//! sent, one cnonce per answer that needs it, one uniform per refresh scheduled with jitter), so a test
//! that gives both machines sources with the same sequence gets the same bytes; the native loop gives a
//! fast generator of its own ([`SplitMix`]).

use crate::digest::{choose_challenge, Challenge, DigestClient};
use crate::granted::granted_expiry;
use crate::message::Message;
use crate::register::{build_register, RegisterFields};
use crate::transaction::{NonInviteClientTransaction, TxAction, TxState};
pub use crate::transaction::{ProtocolError, Timers};

/// Where random identifiers come from (`sipload.sip.ids.IdSource`'s methods the machine calls).
pub trait Ids {
    /// "z9hG4bK" and 16 hex digits.
    fn branch(&mut self) -> Vec<u8>;
    /// 16 hex digits.
    fn cnonce(&mut self) -> Vec<u8>;
    /// Python's `random.uniform(low, high)`.
    fn uniform(&mut self, low: f64, high: f64) -> f64;
}

/// A fast generator of identifiers (SplitMix64) for the native loop: the formats of `IdSource`.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A Call-ID: 24 hex digits and "@sipload".
    pub fn call_id(&mut self) -> Vec<u8> {
        let (a, b) = (self.next_u64(), self.next_u64() >> 32);
        format!("{a:016x}{b:08x}@sipload").into_bytes()
    }

    /// A From tag: 12 hex digits.
    pub fn tag(&mut self) -> Vec<u8> {
        format!("{:012x}", self.next_u64() >> 16).into_bytes()
    }
}

impl Ids for SplitMix {
    fn branch(&mut self) -> Vec<u8> {
        format!("z9hG4bK{:016x}", self.next_u64()).into_bytes()
    }

    fn cnonce(&mut self) -> Vec<u8> {
        format!("{:016x}", self.next_u64()).into_bytes()
    }

    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }
}

/// What endpoints of one group share (`Profile`).
#[derive(Clone, Debug)]
pub struct Profile {
    pub registrar_uri: Vec<u8>,
    pub domain: Vec<u8>,
    pub transport: Vec<u8>,
    pub expires: u64,
    pub refresh_at: f64,
    pub refresh_jitter: f64,
    pub refresh_margin: f64,
    pub user_agent: Vec<u8>,
    pub timers: Timers,
    pub max_retries: u32,
    pub retry_backoff: f64,
    pub retry_backoff_max: f64,
    pub route: Option<Vec<u8>>,
    pub unregister_all: bool,
    pub reuse_nonce: bool,
    pub max_retry_after: f64,
}

impl Profile {
    pub fn reliable(&self) -> bool {
        !self.transport.eq_ignore_ascii_case(b"UDP")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegState {
    Idle,
    Registering,
    Registered,
    Refreshing,
    Backoff,
    Unregistering,
    Unregistered,
    Failed,
}

impl RegState {
    pub const ALL: [RegState; 8] = [
        RegState::Idle,
        RegState::Registering,
        RegState::Registered,
        RegState::Refreshing,
        RegState::Backoff,
        RegState::Unregistering,
        RegState::Unregistered,
        RegState::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RegState::Idle => "idle",
            RegState::Registering => "registering",
            RegState::Registered => "registered",
            RegState::Refreshing => "refreshing",
            RegState::Backoff => "backoff",
            RegState::Unregistering => "unregistering",
            RegState::Unregistered => "unregistered",
            RegState::Failed => "failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegInput {
    Start,
    Stop,
    Provisional,
    Ok,
    Challenge,
    TooBrief,
    Retry,
    Reject,
    Timeout,
    TransportError,
    RefreshTimer,
    BackoffTimer,
}

impl RegInput {
    pub const ALL: [RegInput; 12] = [
        RegInput::Start,
        RegInput::Stop,
        RegInput::Provisional,
        RegInput::Ok,
        RegInput::Challenge,
        RegInput::TooBrief,
        RegInput::Retry,
        RegInput::Reject,
        RegInput::Timeout,
        RegInput::TransportError,
        RegInput::RefreshTimer,
        RegInput::BackoffTimer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RegInput::Start => "start",
            RegInput::Stop => "stop",
            RegInput::Provisional => "provisional",
            RegInput::Ok => "ok",
            RegInput::Challenge => "challenge",
            RegInput::TooBrief => "too_brief",
            RegInput::Retry => "retry",
            RegInput::Reject => "reject",
            RegInput::Timeout => "timeout",
            RegInput::TransportError => "transport_error",
            RegInput::RefreshTimer => "refresh_timer",
            RegInput::BackoffTimer => "backoff_timer",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Register,
    Refresh,
    Unregister,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Register => "register",
            Op::Refresh => "refresh",
            Op::Unregister => "unregister",
        }
    }
}

/// `sipload.sip.failures.FailureReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    Timeout,
    AuthRejected,
    Forbidden,
    NotFound,
    IntervalTooBrief,
    ServerError,
    UnexpectedStatus,
    TransportError,
    ParseError,
    UnsupportedAuth,
    Interrupted,
}

impl FailureReason {
    pub fn name(self) -> &'static str {
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

    /// No answer, a broken transport or a server error: a failed refresh is tried again later.
    pub fn may_pass(self) -> bool {
        matches!(self, FailureReason::Timeout | FailureReason::TransportError | FailureReason::ServerError)
    }
}

/// The events of `sipload/sip/registration.py`, with its fields.
#[derive(Clone, Debug, PartialEq)]
pub enum RegEvent {
    OpStarted {
        op: Op,
        scheduled: f64,
        now: f64,
    },
    Challenged {
        op: Op,
        sent_at: f64,
        now: f64,
    },
    Registered {
        op: Op,
        expires: u64,
        started_at: f64,
        last_sent_at: f64,
        now: f64,
    },
    Unregistered {
        started_at: f64,
        last_sent_at: f64,
        now: f64,
    },
    Failed {
        op: Op,
        reason: FailureReason,
        status: Option<u16>,
        started_at: f64,
        now: f64,
        final_: bool,
        detail: String,
    },
    Retransmitted {
        op: Op,
    },
}

const MAX_STALE_RETRIES: u32 = 2;
const MAX_BRIEF_RETRIES: u32 = 2;

pub fn classify(status: u16) -> RegInput {
    match status {
        0..=199 => RegInput::Provisional,
        200..=299 => RegInput::Ok,
        401 | 407 => RegInput::Challenge,
        423 => RegInput::TooBrief,
        408 | 480 | 500 | 502 | 503 | 504 => RegInput::Retry,
        _ => RegInput::Reject,
    }
}

fn reject_reason(status: u16) -> FailureReason {
    match status {
        403 => FailureReason::Forbidden,
        404 => FailureReason::NotFound,
        500.. => FailureReason::ServerError,
        _ => FailureReason::UnexpectedStatus,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handler {
    BeginRegister,
    StopIdle,
    DeferStop,
    Ignore,
    OnRegistered,
    OnChallenge,
    OnTooBrief,
    OnRetry,
    OnReject,
    OnTimeout,
    OnTransportError,
    BeginRefresh,
    BeginUnregister,
    Resend,
    StopAtRest,
    OnUnregistered,
}

/// THE TABLE (Python's `_TABLE`, row for row): the handler, and the next states it may return (the first
/// is the usual one).
pub fn table(state: RegState, input: RegInput) -> Option<(&'static str, &'static [RegState])> {
    entry(state, input).map(|(h, next)| (handler_name(h), next))
}

fn handler_name(h: Handler) -> &'static str {
    match h {
        Handler::BeginRegister => "_begin_register",
        Handler::StopIdle => "_stop_idle",
        Handler::DeferStop => "_defer_stop",
        Handler::Ignore => "_ignore",
        Handler::OnRegistered => "_on_registered",
        Handler::OnChallenge => "_on_challenge",
        Handler::OnTooBrief => "_on_too_brief",
        Handler::OnRetry => "_on_retry",
        Handler::OnReject => "_on_reject",
        Handler::OnTimeout => "_on_timeout",
        Handler::OnTransportError => "_on_transport_error",
        Handler::BeginRefresh => "_begin_refresh",
        Handler::BeginUnregister => "_begin_unregister",
        Handler::Resend => "_resend",
        Handler::StopAtRest => "_stop_at_rest",
        Handler::OnUnregistered => "_on_unregistered",
    }
}

fn entry(state: RegState, input: RegInput) -> Option<(Handler, &'static [RegState])> {
    use Handler as H;
    use RegInput as I;
    use RegState as S;
    Some(match (state, input) {
        (S::Idle, I::Start) => (H::BeginRegister, &[S::Registering]),
        (S::Idle, I::Stop) => (H::StopIdle, &[S::Unregistered]),
        (S::Registering, I::Stop) => (H::DeferStop, &[S::Registering]),
        (S::Registering, I::Provisional) => (H::Ignore, &[S::Registering]),
        (S::Registering, I::Ok) => (H::OnRegistered, &[S::Registered, S::Unregistering, S::Failed]),
        (S::Registering, I::Challenge) => (H::OnChallenge, &[S::Registering, S::Failed]),
        (S::Registering, I::TooBrief) => (H::OnTooBrief, &[S::Registering, S::Failed]),
        (S::Registering, I::Retry) => (H::OnRetry, &[S::Backoff, S::Failed]),
        (S::Registering, I::Reject) => (H::OnReject, &[S::Failed]),
        (S::Registering, I::Timeout) => (H::OnTimeout, &[S::Backoff, S::Failed]),
        (S::Registering, I::TransportError) => (H::OnTransportError, &[S::Backoff, S::Failed]),
        (S::Registered, I::RefreshTimer) => (H::BeginRefresh, &[S::Refreshing]),
        (S::Registered, I::Stop) => (H::BeginUnregister, &[S::Unregistering]),
        (S::Refreshing, I::Stop) => (H::DeferStop, &[S::Refreshing]),
        (S::Refreshing, I::Provisional) => (H::Ignore, &[S::Refreshing]),
        (S::Refreshing, I::Ok) => (H::OnRegistered, &[S::Registered, S::Unregistering, S::Failed]),
        (S::Refreshing, I::Challenge) => (H::OnChallenge, &[S::Refreshing, S::Failed, S::Unregistering]),
        (S::Refreshing, I::TooBrief) => (H::OnTooBrief, &[S::Refreshing, S::Failed, S::Unregistering]),
        (S::Refreshing, I::Retry) => (H::OnRetry, &[S::Backoff, S::Failed, S::Unregistering]),
        (S::Refreshing, I::Reject) => (H::OnReject, &[S::Failed, S::Unregistering]),
        (S::Refreshing, I::Timeout) => (H::OnTimeout, &[S::Backoff, S::Failed, S::Unregistering]),
        (S::Refreshing, I::TransportError) => (H::OnTransportError, &[S::Backoff, S::Failed, S::Unregistering]),
        (S::Backoff, I::BackoffTimer) => (H::Resend, &[S::Registering, S::Refreshing, S::Unregistering]),
        (S::Backoff, I::Stop) => (H::StopAtRest, &[S::Unregistered, S::Unregistering]),
        (S::Unregistering, I::Stop) => (H::Ignore, &[S::Unregistering]),
        (S::Unregistering, I::Provisional) => (H::Ignore, &[S::Unregistering]),
        (S::Unregistering, I::Ok) => (H::OnUnregistered, &[S::Unregistered]),
        (S::Unregistering, I::Challenge) => (H::OnChallenge, &[S::Unregistering, S::Failed]),
        (S::Unregistering, I::TooBrief) => (H::OnTooBrief, &[S::Unregistering, S::Failed]),
        (S::Unregistering, I::Retry) => (H::OnRetry, &[S::Backoff, S::Failed]),
        (S::Unregistering, I::Reject) => (H::OnReject, &[S::Failed]),
        (S::Unregistering, I::Timeout) => (H::OnTimeout, &[S::Backoff, S::Failed]),
        (S::Unregistering, I::TransportError) => (H::OnTransportError, &[S::Backoff, S::Failed]),
        (S::Unregistered, I::Stop) => (H::Ignore, &[S::Unregistered]),
        (S::Failed, I::Stop) => (H::StopAtRest, &[S::Failed, S::Unregistering]),
        (S::Failed, I::RefreshTimer) => (H::BeginRefresh, &[S::Refreshing]),
        _ => return None,
    })
}

fn busy(op: Op) -> RegState {
    match op {
        Op::Register => RegState::Registering,
        Op::Refresh => RegState::Refreshing,
        Op::Unregister => RegState::Unregistering,
    }
}

/// The binding of one endpoint.
#[derive(Clone, Debug)]
pub struct Registration {
    pub aor: Vec<u8>,
    pub user: Vec<u8>,
    pub contact: Vec<u8>,
    pub sent_by: Vec<u8>,
    pub call_id: Vec<u8>,
    pub from_tag: Vec<u8>,
    pub state: RegState,
    pub granted_expires: Option<u64>,
    pub bound_until: Option<f64>,
    auth: Option<DigestClient>,
    cseq: u32,
    expires_requested: u64,
    op: Op,
    op_started: f64,
    attempt_sent_at: f64,
    answered_at: f64,
    tx: Option<NonInviteClientTransaction>,
    tx_at: Option<f64>,
    pending_request: Vec<u8>,
    challenge: Option<Challenge>,
    challenged_this_op: bool,
    sent_credentials: bool,
    used_cached_nonce: bool,
    stale_retries: u32,
    brief_retries: u32,
    branch: Vec<u8>,
    retries: u32,
    refresh_due: Option<f64>,
    backoff_until: Option<f64>,
    stop_requested: bool,
    outgoing: Vec<Vec<u8>>,
    events: Vec<RegEvent>,
}

/// Whether `needle` occurs in `haystack` (Python's `in` on str).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

impl Registration {
    /// `Registration(profile, user=, contact=, sent_by=, auth=, ids=)` with the Call-ID and From tag the
    /// caller drew (Python draws them from its IdSource in that order).
    pub fn new(
        profile: &Profile,
        user: &[u8],
        contact: &[u8],
        sent_by: &[u8],
        auth: Option<DigestClient>,
        call_id: Vec<u8>,
        from_tag: Vec<u8>,
    ) -> Self {
        let mut aor = b"sip:".to_vec();
        aor.extend_from_slice(user);
        aor.push(b'@');
        aor.extend_from_slice(&profile.domain);
        Registration {
            aor,
            user: user.to_vec(),
            contact: contact.to_vec(),
            sent_by: sent_by.to_vec(),
            call_id,
            from_tag,
            state: RegState::Idle,
            granted_expires: None,
            bound_until: None,
            auth,
            cseq: 0,
            expires_requested: profile.expires,
            op: Op::Register,
            op_started: 0.0,
            attempt_sent_at: 0.0,
            answered_at: 0.0,
            tx: None,
            tx_at: None,
            pending_request: Vec::new(),
            challenge: None,
            challenged_this_op: false,
            sent_credentials: false,
            used_cached_nonce: false,
            stale_retries: 0,
            brief_retries: 0,
            branch: Vec::new(),
            retries: 0,
            refresh_due: None,
            backoff_until: None,
            stop_requested: false,
            outgoing: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn cseq(&self) -> u32 {
        self.cseq
    }

    pub fn refresh_due(&self) -> Option<f64> {
        self.refresh_due
    }

    pub fn finished(&self) -> bool {
        matches!(self.state, RegState::Unregistered | RegState::Failed) && self.tx.is_none() && self.tx_at.is_none()
    }

    pub fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outgoing)
    }

    pub fn take_events(&mut self) -> Vec<RegEvent> {
        std::mem::take(&mut self.events)
    }

    /// Move the outgoing datagrams and events into the caller's buffers (no allocation per call).
    pub fn drain_into(&mut self, out: &mut Vec<Vec<u8>>, events: &mut Vec<RegEvent>) {
        out.append(&mut self.outgoing);
        events.append(&mut self.events);
    }

    pub fn start(&mut self, p: &Profile, ids: &mut dyn Ids, now: f64) -> Result<(), ProtocolError> {
        self.dispatch(p, ids, RegInput::Start, None, now)
    }

    pub fn stop(&mut self, p: &Profile, ids: &mut dyn Ids, now: f64) -> Result<(), ProtocolError> {
        self.dispatch(p, ids, RegInput::Stop, None, now)
    }

    /// Feed a response; false when it does not belong to the current request (stray, late).
    pub fn receive(
        &mut self,
        p: &Profile,
        ids: &mut dyn Ids,
        response: &Message,
        now: f64,
        arrived: Option<f64>,
    ) -> Result<bool, ProtocolError> {
        match &self.tx {
            None if self.tx_at.is_none() => return Ok(false),
            Some(tx) if matches!(tx.state, TxState::Completed | TxState::Terminated) => return Ok(false),
            _ => {}
        }
        let Ok((cseq, method)) = response.cseq() else { return Ok(false) };
        if cseq != self.cseq || method != b"REGISTER" {
            return Ok(false);
        }
        match response.get("via") {
            Some(via) if contains(via, &self.branch) => {}
            _ => return Ok(false),
        }
        let Some(status) = response.status() else { return Ok(false) };
        let action = if self.tx.is_none() && (200..=699).contains(&status) {
            TxAction::PassFinal
        } else {
            self.transaction(p).receive_response(status, now)?
        };
        if action == TxAction::PassFinal {
            self.answered_at = match arrived {
                Some(a) if self.attempt_sent_at <= a && a <= now => a,
                _ => now,
            };
            self.tx = None;
            self.tx_at = None;
            self.pending_request = Vec::new();
            self.dispatch(p, ids, classify(status), Some(response), now)?;
        }
        Ok(true)
    }

    pub fn next_timer(&self, p: &Profile) -> Option<f64> {
        let mut deadline = match (self.tx_at, &self.tx) {
            (Some(sent), _) => Some(p.timers.first_deadline(sent, p.reliable())),
            (None, Some(tx)) => tx.next_timer(),
            (None, None) => None,
        };
        for other in [self.refresh_due, self.backoff_until].into_iter().flatten() {
            if deadline.is_none_or(|d| other < d) {
                deadline = Some(other);
            }
        }
        deadline
    }

    /// The current transaction, built now if it had no input yet (exactly as at its send time).
    fn transaction(&mut self, p: &Profile) -> &mut NonInviteClientTransaction {
        let sent = self.tx_at.take();
        self.tx.get_or_insert_with(|| NonInviteClientTransaction::new(sent.unwrap_or(0.0), p.reliable(), p.timers))
    }

    pub fn handle_timer(&mut self, p: &Profile, ids: &mut dyn Ids, now: f64) -> Result<(), ProtocolError> {
        if self.tx_at.is_some() {
            self.transaction(p);
        }
        let fired = match self.tx.as_mut() {
            Some(tx) if tx.next_timer().is_some_and(|d| d <= now) => {
                Some((tx.handle_timer(now)?, tx.state == TxState::Terminated))
            }
            _ => None,
        };
        if let Some((actions, terminated)) = fired {
            let mut timed_out = false;
            for action in actions {
                match action {
                    TxAction::Retransmit => {
                        self.outgoing.push(self.pending_request.clone());
                        self.events.push(RegEvent::Retransmitted { op: self.op });
                    }
                    TxAction::Timeout => {
                        self.tx = None;
                        timed_out = true;
                        self.dispatch(p, ids, RegInput::Timeout, None, now)?;
                    }
                    _ => {}
                }
            }
            if terminated && !timed_out {
                self.tx = None; // Timer K: the transaction is over
            }
        }
        if self.refresh_due.is_some_and(|d| d <= now) {
            self.dispatch(p, ids, RegInput::RefreshTimer, None, now)?;
        }
        if self.backoff_until.is_some_and(|d| d <= now) {
            self.backoff_until = None;
            self.dispatch(p, ids, RegInput::BackoffTimer, None, now)?;
        }
        Ok(())
    }

    /// The last send failed (refused, reset...).
    pub fn transport_error(&mut self, p: &Profile, ids: &mut dyn Ids, now: f64) -> Result<(), ProtocolError> {
        if self.tx_at.is_some() {
            self.transaction(p);
        }
        let Some(tx) = self.tx.as_mut() else { return Ok(()) };
        if tx.transport_error(now)? == TxAction::TransportFailed {
            self.tx = None;
            self.dispatch(p, ids, RegInput::TransportError, None, now)?;
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        p: &Profile,
        ids: &mut dyn Ids,
        input: RegInput,
        response: Option<&Message>,
        now: f64,
    ) -> Result<(), ProtocolError> {
        let user = String::from_utf8_lossy(&self.user).into_owned();
        let Some((handler, next)) = entry(self.state, input) else {
            return Err(ProtocolError(format!(
                "registration of {user}: no transition for {} in {}",
                input.name(),
                self.state.name()
            )));
        };
        let state = self.run(handler, p, ids, response, now)?;
        if !next.contains(&state) {
            let allowed: Vec<&str> = next.iter().map(|s| s.name()).collect();
            return Err(ProtocolError(format!(
                "registration of {user}: {} in {} led to {}, the table allows {}",
                input.name(),
                self.state.name(),
                state.name(),
                allowed.join(", ")
            )));
        }
        self.state = state;
        Ok(())
    }

    fn run(
        &mut self,
        handler: Handler,
        p: &Profile,
        ids: &mut dyn Ids,
        response: Option<&Message>,
        now: f64,
    ) -> Result<RegState, ProtocolError> {
        let missing = || ProtocolError("a response handler without a response".into());
        Ok(match handler {
            Handler::Ignore => self.state,
            Handler::BeginRegister => self.begin_op(p, ids, Op::Register, now, None),
            Handler::BeginRefresh => {
                let scheduled = self.refresh_due.take();
                self.begin_op(p, ids, Op::Refresh, now, scheduled)
            }
            Handler::BeginUnregister => {
                self.refresh_due = None;
                self.begin_op(p, ids, Op::Unregister, now, None)
            }
            Handler::StopIdle => RegState::Unregistered,
            Handler::DeferStop => {
                self.stop_requested = true;
                self.state
            }
            Handler::StopAtRest => self.stop_without_request(p, ids, self.state, now),
            Handler::Resend => {
                let credentials = self.next_credentials(p, ids);
                self.send(p, ids, now, credentials);
                busy(self.op)
            }
            Handler::OnUnregistered => {
                self.bound_until = None;
                self.granted_expires = None;
                self.events.push(RegEvent::Unregistered {
                    started_at: self.op_started,
                    last_sent_at: self.attempt_sent_at,
                    now: self.answered_at,
                });
                RegState::Unregistered
            }
            Handler::OnRegistered => self.on_registered(p, ids, response.ok_or_else(missing)?, now),
            Handler::OnChallenge => self.on_challenge(p, ids, response.ok_or_else(missing)?, now),
            Handler::OnTooBrief => self.on_too_brief(p, ids, response.ok_or_else(missing)?, now),
            Handler::OnRetry => {
                let response = response.ok_or_else(missing)?;
                let status = response.status().unwrap_or(0);
                let retry_after = response
                    .delta("retry-after", "Retry-After")
                    .ok()
                    .flatten()
                    .map(|v| crate::transaction::py_min(v as f64, p.max_retry_after));
                let reason = if status == 408 { FailureReason::Timeout } else { FailureReason::ServerError };
                self.fail_or_retry(p, ids, reason, Some(status), now, false, retry_after, String::new())
            }
            Handler::OnReject => {
                let response = response.ok_or_else(missing)?;
                let status = response.status().unwrap_or(0);
                let reason = match &response.start {
                    crate::message::StartLine::Response { reason, .. } => String::from_utf8_lossy(reason).into_owned(),
                    crate::message::StartLine::Request { .. } => String::new(),
                };
                self.give_up(p, ids, reject_reason(status), Some(status), now, format!("{status} {reason}"))
            }
            Handler::OnTimeout => {
                self.fail_or_retry(p, ids, FailureReason::Timeout, None, now, false, None, String::new())
            }
            Handler::OnTransportError => {
                self.fail_or_retry(p, ids, FailureReason::TransportError, None, now, false, None, String::new())
            }
        })
    }

    fn on_registered(&mut self, p: &Profile, ids: &mut dyn Ids, response: &Message, now: f64) -> RegState {
        let granted = granted_expiry(response, &self.contact, self.expires_requested);
        let status = response.status();
        if granted == 0 {
            return self.give_up(
                p,
                ids,
                FailureReason::UnexpectedStatus,
                status,
                now,
                "200 OK granted no expiry to our contact".into(),
            );
        }
        self.granted_expires = Some(granted);
        self.bound_until = Some(now + granted as f64);
        self.events.push(RegEvent::Registered {
            op: self.op,
            expires: granted,
            started_at: self.op_started,
            last_sent_at: self.attempt_sent_at,
            now: self.answered_at,
        });
        if self.stop_requested {
            self.stop_requested = false;
            self.refresh_due = None;
            return self.begin_op(p, ids, Op::Unregister, now, None);
        }
        self.schedule_refresh(p, ids, granted, now);
        RegState::Registered
    }

    fn on_challenge(&mut self, p: &Profile, ids: &mut dyn Ids, response: &Message, now: f64) -> RegState {
        let status = response.status();
        let proxy = status == Some(407);
        let challenges = match response.challenges(proxy) {
            Ok(c) => c,
            Err(e) => return self.give_up(p, ids, FailureReason::ParseError, status, now, e.0),
        };
        if self.auth.is_none() {
            return self.give_up(p, ids, FailureReason::AuthRejected, status, now, "challenged, no credentials".into());
        }
        if !self.sent_credentials && !self.challenged_this_op {
            self.events.push(RegEvent::Challenged {
                op: self.op,
                sent_at: self.attempt_sent_at,
                now: self.answered_at,
            });
        }
        if self.sent_credentials {
            let stale = challenges.iter().any(|c| c.stale);
            if stale && self.stale_retries < MAX_STALE_RETRIES {
                self.stale_retries += 1;
            } else if !self.used_cached_nonce {
                return self.give_up(p, ids, FailureReason::AuthRejected, status, now, "credentials rejected".into());
            }
        }
        let Some(auth) = self.auth.as_mut() else { return self.state };
        let answerable: Vec<&Challenge> = challenges.iter().filter(|c| auth.can_answer(c)).collect();
        let preference = auth.preference.clone();
        let Some(chosen) = choose_challenge(&answerable, preference.as_deref()).cloned() else {
            let names: Vec<String> =
                challenges.iter().map(|c| String::from_utf8_lossy(&c.algorithm_name).into_owned()).collect();
            let names = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            return self.give_up(
                p,
                ids,
                FailureReason::UnsupportedAuth,
                status,
                now,
                format!("no digest challenge we can answer (offered: {names})"),
            );
        };
        self.challenged_this_op = true;
        let credentials = self.authorize(p, ids, &chosen);
        self.challenge = Some(chosen);
        self.send(p, ids, now, credentials);
        self.state
    }

    fn authorize(&mut self, p: &Profile, ids: &mut dyn Ids, challenge: &Challenge) -> Option<(&'static str, Vec<u8>)> {
        let auth = self.auth.as_mut()?;
        let mut cnonce = || Ok(ids.cnonce());
        auth.authorize(challenge, b"REGISTER", &p.registrar_uri, b"", &mut cnonce).ok()
    }

    fn on_too_brief(&mut self, p: &Profile, ids: &mut dyn Ids, response: &Message, now: f64) -> RegState {
        let raw = response.get("min-expires");
        let minimum: i64 = match crate::headers::parse_delta(raw.unwrap_or_default(), "Min-Expires") {
            Ok(v) => v as i64,
            Err(_) => -1,
        };
        self.brief_retries += 1;
        if minimum <= self.expires_requested as i64 || minimum > (1i64 << 31) || self.brief_retries > MAX_BRIEF_RETRIES
        {
            let shown = match raw {
                Some(v) => crate::error::shown(v, usize::MAX),
                None => "None".to_string(),
            };
            return self.give_up(
                p,
                ids,
                FailureReason::IntervalTooBrief,
                Some(423),
                now,
                format!("423 with Min-Expires {shown}"),
            );
        }
        self.expires_requested = minimum as u64;
        let credentials = self.next_credentials(p, ids);
        self.send(p, ids, now, credentials);
        self.state
    }

    fn begin_op(&mut self, p: &Profile, ids: &mut dyn Ids, op: Op, now: f64, scheduled: Option<f64>) -> RegState {
        self.events.push(RegEvent::OpStarted { op, scheduled: scheduled.unwrap_or(now), now });
        self.op = op;
        self.op_started = now;
        self.retries = 0;
        self.challenged_this_op = false;
        self.stale_retries = 0;
        self.brief_retries = 0;
        if op != Op::Refresh {
            self.expires_requested = p.expires;
        }
        let credentials = self.next_credentials(p, ids);
        self.send(p, ids, now, credentials);
        busy(op)
    }

    /// The cached challenge answered again with nc+1, for a new request of this operation.
    fn next_credentials(&mut self, p: &Profile, ids: &mut dyn Ids) -> Option<(&'static str, Vec<u8>)> {
        if self.auth.is_none() || !p.reuse_nonce {
            return None;
        }
        let challenge = self.challenge.clone()?;
        self.authorize(p, ids, &challenge)
    }

    fn send(&mut self, p: &Profile, ids: &mut dyn Ids, now: f64, credentials: Option<(&'static str, Vec<u8>)>) {
        self.cseq = self.cseq.wrapping_add(1);
        self.sent_credentials = credentials.is_some();
        self.used_cached_nonce = credentials.is_some() && !self.challenged_this_op;
        let unregister = self.op == Op::Unregister;
        let expires = if unregister { 0 } else { self.expires_requested };
        let contact = if unregister && p.unregister_all {
            b"*".to_vec()
        } else {
            let mut c = Vec::with_capacity(self.contact.len() + 2);
            c.push(b'<');
            c.extend_from_slice(&self.contact);
            c.push(b'>');
            c
        };
        self.branch = ids.branch();
        let request = build_register(&RegisterFields {
            registrar_uri: &p.registrar_uri,
            transport: &p.transport,
            sent_by: &self.sent_by,
            branch: &self.branch,
            route: p.route.as_deref(),
            aor: &self.aor,
            from_tag: &self.from_tag,
            call_id: &self.call_id,
            cseq: self.cseq,
            contact: &contact,
            supported: None,
            expires,
            authorization: credentials.as_ref().map(|(n, v)| (n.as_bytes(), v.as_slice())),
            user_agent: &p.user_agent,
        });
        self.pending_request = request.clone();
        self.attempt_sent_at = now;
        self.tx = None;
        self.tx_at = Some(now);
        self.outgoing.push(request);
    }

    fn schedule_refresh(&mut self, p: &Profile, ids: &mut dyn Ids, granted: u64, now: f64) {
        let granted = granted as f64;
        let mut delay = granted * p.refresh_at;
        if p.refresh_jitter != 0.0 {
            delay += ids.uniform(-p.refresh_jitter, p.refresh_jitter) * granted;
        }
        delay = crate::transaction::py_min(delay, granted - p.refresh_margin);
        let floor = crate::transaction::py_min(granted * 0.5, 1.0);
        self.refresh_due = Some(now + if floor > delay { floor } else { delay });
    }

    fn give_up(
        &mut self,
        p: &Profile,
        ids: &mut dyn Ids,
        reason: FailureReason,
        status: Option<u16>,
        now: f64,
        detail: String,
    ) -> RegState {
        self.fail_or_retry(p, ids, reason, status, now, true, None, detail)
    }

    #[allow(clippy::too_many_arguments)]
    fn fail_or_retry(
        &mut self,
        p: &Profile,
        ids: &mut dyn Ids,
        reason: FailureReason,
        status: Option<u16>,
        now: f64,
        final_: bool,
        retry_after: Option<f64>,
        detail: String,
    ) -> RegState {
        let stopping = self.stop_requested && self.op != Op::Unregister;
        if !final_ && !stopping && self.retries < p.max_retries {
            self.retries += 1;
            let backoff =
                crate::transaction::py_min(p.retry_backoff * 2f64.powi(self.retries as i32 - 1), p.retry_backoff_max);
            let delay = retry_after.unwrap_or(backoff);
            self.events.push(RegEvent::Failed {
                op: self.op,
                reason,
                status,
                started_at: self.op_started,
                now,
                final_: false,
                detail,
            });
            self.backoff_until = Some(now + delay);
            return RegState::Backoff;
        }
        self.events.push(RegEvent::Failed {
            op: self.op,
            reason,
            status,
            started_at: self.op_started,
            now,
            final_: true,
            detail,
        });
        if self.op == Op::Unregister {
            return RegState::Failed;
        }
        if self.stop_requested {
            self.stop_requested = false;
            return self.stop_without_request(p, ids, RegState::Failed, now);
        }
        if self.op == Op::Refresh && reason.may_pass() {
            let wait = if p.retry_backoff_max > 1.0 { p.retry_backoff_max } else { 1.0 };
            self.refresh_due = Some(now + wait);
        }
        RegState::Failed
    }

    fn stop_without_request(&mut self, p: &Profile, ids: &mut dyn Ids, state: RegState, now: f64) -> RegState {
        if state == RegState::Backoff && self.op != Op::Unregister {
            self.events.push(RegEvent::Failed {
                op: self.op,
                reason: FailureReason::Interrupted,
                status: None,
                started_at: self.op_started,
                now,
                final_: true,
                detail: "stopped while waiting to retry".into(),
            });
        }
        self.backoff_until = None;
        self.refresh_due = None;
        if self.bound_until.is_some_and(|b| b > now) {
            return self.begin_op(p, ids, Op::Unregister, now, None);
        }
        if state == RegState::Failed {
            state
        } else {
            RegState::Unregistered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_is_in_the_table_or_refused() {
        let mut listed = 0;
        for s in RegState::ALL {
            for i in RegInput::ALL {
                if let Some((_, next)) = table(s, i) {
                    listed += 1;
                    assert!(!next.is_empty());
                }
            }
        }
        assert_eq!(listed, 36); // the rows of Python's _TABLE
    }

    #[test]
    fn a_stop_in_a_state_without_a_row_is_a_protocol_error() {
        let profile = Profile {
            registrar_uri: b"sip:t".to_vec(),
            domain: b"t".to_vec(),
            transport: b"UDP".to_vec(),
            expires: 60,
            refresh_at: 0.5,
            refresh_jitter: 0.0,
            refresh_margin: 2.0,
            user_agent: b"sipload".to_vec(),
            timers: Timers::default(),
            max_retries: 3,
            retry_backoff: 1.0,
            retry_backoff_max: 30.0,
            route: None,
            unregister_all: false,
            reuse_nonce: true,
            max_retry_after: 3600.0,
        };
        let mut ids = SplitMix(1);
        let mut reg = Registration::new(&profile, b"a", b"sip:a@h", b"h", None, b"c".to_vec(), b"t".to_vec());
        reg.start(&profile, &mut ids, 0.0).expect("start");
        assert_eq!(reg.state, RegState::Registering);
        let err = reg.start(&profile, &mut ids, 0.0).expect_err("no row");
        assert_eq!(err.0, "registration of a: no transition for start in registering");
        assert_eq!(reg.take_outgoing().len(), 1);
    }
}
