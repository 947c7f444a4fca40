//! The registration machine of one endpoint (RFC 3261 §10), sans-IO: `sipload/sip/registration.py`
//! in Rust, with the same table, the same handlers and the same bytes and events.
//!
//! One [`Registration`] owns one binding: an AoR, a Contact and one Call-ID kept across every refresh,
//! the CSeq rising by one per request. Inputs carry `now` (seconds; no clock is read here):
//! [`start`](Registration::start) / [`stop`](Registration::stop), [`receive`](Registration::receive)
//! (a response the engine matched by Call-ID), [`handle_timer`](Registration::handle_timer) (at or
//! after [`next_timer`](Registration::next_timer)), [`transport_error`](Registration::transport_error)
//! and [`flow_failed`](Registration::flow_failed). Out come datagrams
//! ([`take_outgoing`](Registration::take_outgoing)) and [`RegEvent`]s
//! ([`take_events`](Registration::take_events)).
//!
//! The machine is the table [`TABLE`]: `(state, input) -> (handler, next states)`, one row per pair,
//! exactly Python's `_TABLE`. `dispatch` looks the pair up (none: a protocol error), runs the handler
//! and sets the state it returned, which must be one its row lists (else a protocol error: a bug).
//! Every request runs in a [`NonInviteClientTransaction`] (Timer E/F), built only when the request
//! gets another input than its final response (a timer, a 1xx, a transport error), as in Python.
//!
//! Identifiers and the refresh jitter come from an [`Ids`] in the order the Python machine draws them
//! from its `IdSource` (see `ids.rs` for why the generator itself is mirrored): Call-ID and From tag at
//! creation (then the +sip.instance, if drawn), a cnonce before the branch of each request whose
//! credentials need one, the jitter when a 200 schedules the refresh.
//!
//! Text is bytes: what the Python side has as `str` decoded with `surrogateescape`. No input panics:
//! every failure the Python machine raises is an [`MachineError`] here, after the same changes of state.

use std::sync::Arc;

use crate::digest::{choose_challenge, AuthError, Challenge, DigestClient};
use crate::error::{shown, ParseError, ProtocolError};
use crate::failures::FailureReason;
use crate::granted::{granted_expiry, read_flow, Flow};
use crate::headers::parse_delta;
use crate::ids::{branch_text, Ids};
use crate::message::{Message, StartLine};
use crate::packed::Packed;
use crate::register::{build_register, RegisterFields};
use crate::transaction::{py_max, py_min, NonInviteClientTransaction, Timers, TxAction, TxState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegState {
    Idle,
    Registering,
    Registered,
    Refreshing,
    /// Waiting to retry the current operation.
    Backoff,
    Unregistering,
    /// Final: stopped, nothing bound.
    Unregistered,
    /// Final: gave up (the reason is in the Failed event).
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

    /// The Python enum's value.
    pub fn value(self) -> &'static str {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegInput {
    Start,
    Stop,
    /// 1xx.
    Provisional,
    /// 2xx.
    Ok,
    /// 401 / 407.
    Challenge,
    /// 423.
    TooBrief,
    /// 408, 480, 500, 502, 503, 504: retry with backoff.
    Retry,
    /// Any other final response.
    Reject,
    /// The transaction's Timer F fired: no final response.
    Timeout,
    /// The request could not be sent.
    TransportError,
    /// The refresh is due (also: register again after a failed refresh).
    RefreshTimer,
    /// The wait before retrying the operation is over.
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

    pub fn value(self) -> &'static str {
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

/// The three phases the engine measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Register,
    Refresh,
    Unregister,
}

impl Op {
    pub fn value(self) -> &'static str {
        match self {
            Op::Register => "register",
            Op::Refresh => "refresh",
            Op::Unregister => "unregister",
        }
    }

    /// The state of a request in flight of this operation (`_BUSY`; BACKOFF goes back to it).
    fn busy(self) -> RegState {
        match self {
            Op::Register => RegState::Registering,
            Op::Refresh => RegState::Refreshing,
            Op::Unregister => RegState::Unregistering,
        }
    }
}

/// The handlers of the table (Python's method names in [`Handler::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handler {
    Ignore,
    BeginRegister,
    BeginRefresh,
    BeginUnregister,
    StopIdle,
    DeferStop,
    StopAtRest,
    Resend,
    OnUnregistered,
    OnRegistered,
    OnChallenge,
    OnTooBrief,
    OnRetry,
    OnReject,
    OnTimeout,
    OnTransportError,
}

impl Handler {
    pub fn name(self) -> &'static str {
        match self {
            Handler::Ignore => "_ignore",
            Handler::BeginRegister => "_begin_register",
            Handler::BeginRefresh => "_begin_refresh",
            Handler::BeginUnregister => "_begin_unregister",
            Handler::StopIdle => "_stop_idle",
            Handler::DeferStop => "_defer_stop",
            Handler::StopAtRest => "_stop_at_rest",
            Handler::Resend => "_resend",
            Handler::OnUnregistered => "_on_unregistered",
            Handler::OnRegistered => "_on_registered",
            Handler::OnChallenge => "_on_challenge",
            Handler::OnTooBrief => "_on_too_brief",
            Handler::OnRetry => "_on_retry",
            Handler::OnReject => "_on_reject",
            Handler::OnTimeout => "_on_timeout",
            Handler::OnTransportError => "_on_transport_error",
        }
    }
}

/// One row: the pair, its handler, and the states the handler may lead to (the usual one first).
pub type Row = ((RegState, RegInput), (Handler, &'static [RegState]));

/// THE TABLE, row for row Python's `_TABLE` (see its comments for why each refinement exists).
pub const TABLE: &[Row] = {
    use Handler as H;
    use RegInput as I;
    use RegState as S;
    &[
        ((S::Idle, I::Start), (H::BeginRegister, &[S::Registering])),
        ((S::Idle, I::Stop), (H::StopIdle, &[S::Unregistered])),
        // REGISTERING: the initial REGISTER is in flight. FAILED: gave up; UNREGISTERING: the 200
        // came after a stop, which waited for it.
        ((S::Registering, I::Stop), (H::DeferStop, &[S::Registering])),
        ((S::Registering, I::Provisional), (H::Ignore, &[S::Registering])),
        ((S::Registering, I::Ok), (H::OnRegistered, &[S::Registered, S::Unregistering, S::Failed])),
        ((S::Registering, I::Challenge), (H::OnChallenge, &[S::Registering, S::Failed])),
        ((S::Registering, I::TooBrief), (H::OnTooBrief, &[S::Registering, S::Failed])),
        ((S::Registering, I::Retry), (H::OnRetry, &[S::Backoff, S::Failed])),
        ((S::Registering, I::Reject), (H::OnReject, &[S::Failed])),
        ((S::Registering, I::Timeout), (H::OnTimeout, &[S::Backoff, S::Failed])),
        ((S::Registering, I::TransportError), (H::OnTransportError, &[S::Backoff, S::Failed])),
        // REGISTERED: bound, the refresh is scheduled.
        ((S::Registered, I::RefreshTimer), (H::BeginRefresh, &[S::Refreshing])),
        ((S::Registered, I::Stop), (H::BeginUnregister, &[S::Unregistering])),
        // REFRESHING: as REGISTERING; a stop that waited for a failure unregisters when the registrar
        // may still hold the binding (UNREGISTERING).
        ((S::Refreshing, I::Stop), (H::DeferStop, &[S::Refreshing])),
        ((S::Refreshing, I::Provisional), (H::Ignore, &[S::Refreshing])),
        ((S::Refreshing, I::Ok), (H::OnRegistered, &[S::Registered, S::Unregistering, S::Failed])),
        ((S::Refreshing, I::Challenge), (H::OnChallenge, &[S::Refreshing, S::Failed, S::Unregistering])),
        ((S::Refreshing, I::TooBrief), (H::OnTooBrief, &[S::Refreshing, S::Failed, S::Unregistering])),
        ((S::Refreshing, I::Retry), (H::OnRetry, &[S::Backoff, S::Failed, S::Unregistering])),
        ((S::Refreshing, I::Reject), (H::OnReject, &[S::Failed, S::Unregistering])),
        ((S::Refreshing, I::Timeout), (H::OnTimeout, &[S::Backoff, S::Failed, S::Unregistering])),
        ((S::Refreshing, I::TransportError), (H::OnTransportError, &[S::Backoff, S::Failed, S::Unregistering])),
        // BACKOFF: waiting to retry the operation; the retry goes back to the operation's own state.
        ((S::Backoff, I::BackoffTimer), (H::Resend, &[S::Registering, S::Refreshing, S::Unregistering])),
        ((S::Backoff, I::Stop), (H::StopAtRest, &[S::Unregistered, S::Unregistering])),
        // UNREGISTERING: a stop changes nothing, a failure is final.
        ((S::Unregistering, I::Stop), (H::Ignore, &[S::Unregistering])),
        ((S::Unregistering, I::Provisional), (H::Ignore, &[S::Unregistering])),
        ((S::Unregistering, I::Ok), (H::OnUnregistered, &[S::Unregistered])),
        ((S::Unregistering, I::Challenge), (H::OnChallenge, &[S::Unregistering, S::Failed])),
        ((S::Unregistering, I::TooBrief), (H::OnTooBrief, &[S::Unregistering, S::Failed])),
        ((S::Unregistering, I::Retry), (H::OnRetry, &[S::Backoff, S::Failed])),
        ((S::Unregistering, I::Reject), (H::OnReject, &[S::Failed])),
        ((S::Unregistering, I::Timeout), (H::OnTimeout, &[S::Backoff, S::Failed])),
        ((S::Unregistering, I::TransportError), (H::OnTransportError, &[S::Backoff, S::Failed])),
        // UNREGISTERED: final.
        ((S::Unregistered, I::Stop), (H::Ignore, &[S::Unregistered])),
        // FAILED: final, except after a refresh that failed for a reason that may pass.
        ((S::Failed, I::Stop), (H::StopAtRest, &[S::Failed, S::Unregistering])),
        ((S::Failed, I::RefreshTimer), (H::BeginRefresh, &[S::Refreshing])),
    ]
};

const NO_ROW: u8 = u8::MAX;

/// `INDEX[state][input]`: the row of TABLE for the pair, or NO_ROW (built once, at compile time).
const INDEX: [[u8; 12]; 8] = {
    let mut index = [[NO_ROW; 12]; 8];
    let mut row = 0;
    while row < TABLE.len() {
        let ((state, input), _) = TABLE[row];
        index[state as usize][input as usize] = row as u8;
        row += 1;
    }
    index
};

/// The row of `(state, input)`, if the table has one.
pub fn row(state: RegState, input: RegInput) -> Option<&'static (Handler, &'static [RegState])> {
    let at = INDEX.get(state as usize)?.get(input as usize).copied()?;
    TABLE.get(usize::from(at)).map(|(_, entry)| entry)
}

/// The input a final (or provisional) status is (`classify`).
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

const MAX_STALE_RETRIES: u32 = 2;
/// 423s answered per operation.
const MAX_BRIEF_RETRIES: u32 = 2;

/// What endpoints of one group share (`Profile`).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// AoR host, e.g. "sipload.test".
    pub domain: Vec<u8>,
    /// Request-URI, e.g. "sip:sipload.test".
    pub registrar_uri: Vec<u8>,
    /// Via transport token.
    pub transport: Vec<u8>,
    /// Requested expiry.
    pub expires: u64,
    /// Fraction of the granted expiry.
    pub refresh_at: f64,
    /// +- fraction of the granted expiry.
    pub refresh_jitter: f64,
    /// Refresh at least this many seconds before expiry.
    pub refresh_margin: f64,
    pub user_agent: Vec<u8>,
    pub timers: Timers,
    /// Retries of one operation after a timeout / 5xx.
    pub max_retries: i64,
    /// First backoff, doubling.
    pub retry_backoff: f64,
    pub retry_backoff_max: f64,
    /// Outbound proxy, as a Route header value.
    pub route: Option<Vec<u8>>,
    /// Unregister with Contact: *.
    pub unregister_all: bool,
    /// Refresh with the last challenge (nc+1) instead of waiting for a 401.
    pub reuse_nonce: bool,
    /// Retry-After values above this are capped.
    pub max_retry_after: f64,
    /// RFC 5626: +sip.instance + reg-id, Supported: path, outbound.
    pub outbound: bool,
    /// RFC 5627: +sip.instance, Supported: gruu.
    pub gruu: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            domain: Vec::new(),
            registrar_uri: Vec::new(),
            transport: b"UDP".to_vec(),
            expires: 3600,
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
            outbound: false,
            gruu: false,
        }
    }
}

impl Profile {
    /// Any transport but UDP.
    pub fn reliable(&self) -> bool {
        !self.transport.eq_ignore_ascii_case(b"UDP")
    }
}

/// What the machine tells the engine. Times are seconds on the caller's clock.
#[derive(Debug, Clone, PartialEq)]
pub enum RegEvent {
    /// An operation sent its first request; `scheduled` is when it was due (a refresh's deadline).
    OpStarted {
        op: Op,
        scheduled: f64,
        now: f64,
    },
    /// The first request of an operation was challenged (the challenge phase).
    Challenged {
        op: Op,
        sent_at: f64,
        now: f64,
    },
    /// `expires` granted; `last_sent_at`: the request that got the 200 (the authenticated leg).
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
    /// `final_` false: a retry is scheduled. `detail` is text (bytes as the Python str has them).
    Failed {
        op: Op,
        reason: FailureReason,
        status: Option<u16>,
        started_at: f64,
        now: f64,
        final_: bool,
        detail: Vec<u8>,
    },
    Retransmitted {
        op: Op,
    },
}

/// What the Python machine raises, here returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineError {
    /// `ProtocolError`: an input with no transition (the message as text bytes).
    Protocol(Vec<u8>),
    /// `ParseError` out of a handler (a 200's Service-Route, Path or Require that does not split).
    Parse(ParseError),
    /// `ValueError` of the digest client.
    Auth(AuthError),
}

impl From<ProtocolError> for MachineError {
    fn from(e: ProtocolError) -> Self {
        MachineError::Protocol(e.0.into_bytes())
    }
}

impl From<ParseError> for MachineError {
    fn from(e: ParseError) -> Self {
        MachineError::Parse(e)
    }
}

impl From<AuthError> for MachineError {
    fn from(e: AuthError) -> Self {
        MachineError::Auth(e)
    }
}

pub type MachineResult<T> = Result<T, MachineError>;

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `instance_urn`: a version-4 UUID URN from 128 random bits (RFC 5626 §4.1).
pub fn instance_urn(ids: &mut impl Ids) -> Vec<u8> {
    let mut n = ids.getrandbits(128);
    n &= !(0xc000u128 << 48);
    n |= 0x8000u128 << 48;
    n &= !(0xf000u128 << 64);
    n |= 4u128 << 76;
    let h = format!("{n:032x}");
    let part = |a: usize, b: usize| h.get(a..b).unwrap_or_default();
    format!("urn:uuid:{}-{}-{}-{}-{}", part(0, 8), part(8, 12), part(12, 16), part(16, 20), part(20, 32)).into_bytes()
}

/// The binding of one endpoint; see the module doc.
#[derive(Debug, Clone)]
pub struct Registration<I: Ids> {
    pub profile: Arc<Profile>,
    /// user, Contact URI, Via sent-by, Call-ID, From tag, in one allocation (see the accessors).
    texts: Packed<5>,
    pub state: RegState,
    pub granted_expires: Option<u64>,
    /// Until when the registrar may hold our binding.
    pub bound_until: Option<f64>,
    /// Service-Route and Path of the last 200, when it had any (rare: kept out of line).
    routes: Option<Box<[Vec<Vec<u8>>; 2]>>,
    auth: Option<DigestClient>,
    ids: I,
    flow: Option<Box<Flow>>,
    cseq: u32,
    expires_requested: u64,
    op: Op,
    op_started: f64,
    attempt_sent_at: f64,
    answered_at: f64,
    /// The transaction, once its request had another input than its final response.
    tx: Option<Box<NonInviteClientTransaction>>,
    /// The send time of a request whose transaction had no input yet.
    tx_at: Option<f64>,
    pending_request: Vec<u8>,
    challenge: Option<Challenge>,
    challenged_this_op: bool,
    sent_credentials: bool,
    used_cached_nonce: bool,
    stale_retries: u32,
    brief_retries: u32,
    /// The random bits of the branch of the request in flight (a response must carry it).
    branch: Option<u64>,
    retries: i64,
    refresh_due: Option<f64>,
    backoff_until: Option<f64>,
    stop_requested: bool,
    /// Datagrams and events not taken yet, in the order they came.
    output: Vec<Output>,
}

/// A datagram to send or an event, as the machine produced them.
#[derive(Debug, Clone)]
enum Output {
    Datagram(Vec<u8>),
    Event(RegEvent),
}

impl<I: Ids> Registration<I> {
    /// As `Registration(profile, user=, contact=, sent_by=, auth=, ids=, instance=, reg_id=)`; the
    /// error is the ValueError of a bad instance or reg_id (outbound / GRUU only).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        profile: Arc<Profile>,
        user: &[u8],
        contact: &[u8],
        sent_by: &[u8],
        auth: Option<DigestClient>,
        mut ids: I,
        instance: Option<&[u8]>,
        reg_id: i64,
    ) -> Result<Self, String> {
        let call_id = ids.call_id().into_bytes();
        let from_tag = ids.tag().into_bytes();
        let mut flow = None;
        if profile.outbound || profile.gruu {
            let instance = match instance {
                Some(i) => i.to_vec(),
                None => instance_urn(&mut ids),
            };
            flow = Some(Box::new(Flow::new(profile.outbound, profile.gruu, &instance, reg_id)?));
        }
        let expires_requested = profile.expires;
        Ok(Registration {
            profile,
            texts: Packed::new([user, contact, sent_by, &call_id, &from_tag]),
            state: RegState::Idle,
            granted_expires: None,
            bound_until: None,
            routes: None,
            auth,
            ids,
            flow,
            cseq: 0,
            expires_requested,
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
            branch: None,
            retries: 0,
            refresh_due: None,
            backoff_until: None,
            stop_requested: false,
            output: Vec::new(),
        })
    }

    pub fn user(&self) -> &[u8] {
        self.texts.get(0)
    }

    /// "sip:user@domain" (made when asked: a million endpoints need not keep it).
    pub fn aor(&self) -> Vec<u8> {
        joined(&[b"sip:", self.user(), b"@", &self.profile.domain])
    }

    /// URI, e.g. "sip:user1@127.0.0.1:5080;transport=udp".
    pub fn contact(&self) -> &[u8] {
        self.texts.get(1)
    }

    /// Via sent-by, e.g. "127.0.0.1:5080".
    pub fn sent_by(&self) -> &[u8] {
        self.texts.get(2)
    }

    pub fn call_id(&self) -> &[u8] {
        self.texts.get(3)
    }

    pub fn from_tag(&self) -> &[u8] {
        self.texts.get(4)
    }

    /// The Service-Route of the last 200 (RFC 3608).
    pub fn service_route(&self) -> &[Vec<u8>] {
        self.routes.as_deref().map_or(&[], |r| &r[0])
    }

    /// The Path of the last 200 (RFC 3327).
    pub fn path(&self) -> &[Vec<u8>] {
        self.routes.as_deref().map_or(&[], |r| &r[1])
    }

    // --- RFC 5626 / 5627 -------------------------------------------------------------------
    /// Our +sip.instance, with outbound or GRUU.
    pub fn instance(&self) -> Option<&[u8]> {
        self.flow.as_deref().map(|f| f.instance.as_slice())
    }

    pub fn reg_id(&self) -> Option<u32> {
        self.flow.as_deref().and_then(|f| f.reg_id)
    }

    /// The public GRUU the last 200 gave our binding (RFC 5627 §5).
    pub fn pub_gruu(&self) -> Option<&[u8]> {
        self.flow.as_deref().and_then(|f| f.pub_gruu.as_deref())
    }

    pub fn temp_gruu(&self) -> Option<&[u8]> {
        self.flow.as_deref().and_then(|f| f.temp_gruu.as_deref())
    }

    /// The last 200 had `Require: outbound` (RFC 5626 §6).
    pub fn outbound_required(&self) -> bool {
        self.flow.as_deref().is_some_and(|f| f.outbound_required)
    }

    // --- public inputs ----------------------------------------------------------------------
    pub fn start(&mut self, now: f64) -> MachineResult<()> {
        self.dispatch(RegInput::Start, None, now)
    }

    pub fn stop(&mut self, now: f64) -> MachineResult<()> {
        self.dispatch(RegInput::Stop, None, now)
    }

    /// Feed a response; false when it does not belong to the current request (stray, late).
    ///
    /// `arrived`: when it reached the socket, if known (not after `now`): the latencies in the events
    /// end then; the next request, its timers and the state take `now`.
    pub fn receive(&mut self, response: &Message, now: f64, arrived: Option<f64>) -> MachineResult<bool> {
        match &self.tx {
            None if self.tx_at.is_none() => return Ok(false),
            Some(tx) if matches!(tx.state, TxState::Completed | TxState::Terminated) => return Ok(false),
            _ => {}
        }
        let Ok((cseq, method)) = response.cseq() else {
            return Ok(false);
        };
        if cseq != self.cseq || method != b"REGISTER" {
            return Ok(false);
        }
        match response.get("via") {
            Some(via) if self.branch.is_none_or(|bits| contains(via, branch_text(bits).as_bytes())) => {}
            _ => return Ok(false), // forged, or another transaction's
        }
        let StartLine::Response { status, .. } = response.start else {
            return Ok(false);
        };
        let action = if self.tx.is_none() && (200..=699).contains(&status) {
            TxAction::PassFinal // what a transaction still in Trying answers to a final response
        } else {
            self.transaction().receive_response(status, now)?
        };
        if action == TxAction::PassFinal {
            self.answered_at = match arrived {
                Some(a) if self.attempt_sent_at <= a && a <= now => a,
                _ => now,
            };
            self.tx = None;
            self.tx_at = None;
            self.pending_request = Vec::new(); // answered: never retransmitted
            self.branch = None; // nor matched again (the next request draws its own)
            self.dispatch(classify(status), Some(response), now)?;
        }
        Ok(true)
    }

    pub fn next_timer(&self) -> Option<f64> {
        let mut deadline = match (self.tx_at, &self.tx) {
            (Some(sent), _) => Some(self.profile.timers.first_deadline(sent, self.profile.reliable())),
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
    fn transaction(&mut self) -> &mut NonInviteClientTransaction {
        let sent = if self.tx.is_none() { self.tx_at.take().unwrap_or_default() } else { 0.0 };
        let (reliable, timers) = (self.profile.reliable(), self.profile.timers);
        self.tx.get_or_insert_with(|| Box::new(NonInviteClientTransaction::new(sent, reliable, timers)))
    }

    pub fn handle_timer(&mut self, now: f64) -> MachineResult<()> {
        if self.tx_at.is_some() {
            self.transaction();
        }
        if let Some(mut tx) = self.tx.take() {
            let mut timed_out = false;
            if tx.next_timer().is_some_and(|d| d <= now) {
                let actions = match tx.handle_timer(now) {
                    Ok(actions) => actions,
                    Err(e) => {
                        self.tx = Some(tx);
                        return Err(e.into());
                    }
                };
                for action in actions {
                    match action {
                        TxAction::Retransmit => {
                            self.output.push(Output::Datagram(self.pending_request.clone()));
                            self.output.push(Output::Event(RegEvent::Retransmitted { op: self.op }));
                        }
                        TxAction::Timeout => {
                            timed_out = true; // the transaction is forgotten before the machine hears of it
                            self.dispatch(RegInput::Timeout, None, now)?;
                        }
                        _ => {}
                    }
                }
            }
            if !timed_out && tx.state != TxState::Terminated {
                self.tx = Some(tx);
            }
        }
        if self.refresh_due.is_some_and(|d| d <= now) {
            self.dispatch(RegInput::RefreshTimer, None, now)?;
        }
        if self.backoff_until.is_some_and(|d| d <= now) {
            self.backoff_until = None;
            self.dispatch(RegInput::BackoffTimer, None, now)?;
        }
        Ok(())
    }

    /// The last send failed (connection refused, reset...).
    pub fn transport_error(&mut self, now: f64) -> MachineResult<()> {
        if self.tx_at.is_some() {
            self.transaction();
        }
        let Some(tx) = self.tx.as_mut() else {
            return Ok(());
        };
        if tx.transport_error(now)? == TxAction::TransportFailed {
            self.tx = None;
            self.dispatch(RegInput::TransportError, None, now)?;
        }
        Ok(())
    }

    /// The flow under this binding failed: a request in flight fails as a transport error; a binding at
    /// rest is refreshed at once (RFC 5626 §4.4.1).
    pub fn flow_failed(&mut self, now: f64) -> MachineResult<()> {
        if self.tx.is_some() || self.tx_at.is_some() {
            self.transport_error(now)
        } else {
            if let (RegState::Registered, Some(due)) = (self.state, self.refresh_due) {
                self.refresh_due = Some(py_min(due, now));
            }
            Ok(())
        }
    }

    pub fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        self.take(|o| match o {
            Output::Datagram(d) => Ok(d),
            other => Err(other),
        })
    }

    pub fn take_events(&mut self) -> Vec<RegEvent> {
        self.take(|o| match o {
            Output::Event(e) => Ok(e),
            other => Err(other),
        })
    }

    /// Every output not taken yet, in order: each datagram to `datagram`, each event to `event`. The
    /// buffer goes with them: a machine at rest keeps none.
    pub fn take_output(&mut self, mut datagram: impl FnMut(Vec<u8>), mut event: impl FnMut(RegEvent)) {
        for o in std::mem::take(&mut self.output) {
            match o {
                Output::Datagram(d) => datagram(d),
                Output::Event(e) => event(e),
            }
        }
    }

    /// The outputs `pick` takes (Ok), in order; the others stay. A new Vec: a machine at rest keeps no buffer.
    fn take<T>(&mut self, pick: impl Fn(Output) -> Result<T, Output>) -> Vec<T> {
        let mut taken = Vec::new();
        let mut rest = Vec::new();
        for o in std::mem::take(&mut self.output) {
            match pick(o) {
                Ok(t) => taken.push(t),
                Err(o) => rest.push(o),
            }
        }
        self.output = rest;
        taken
    }

    pub fn refresh_due(&self) -> Option<f64> {
        self.refresh_due
    }

    /// Stopped or gave up, and nothing in flight.
    pub fn finished(&self) -> bool {
        matches!(self.state, RegState::Unregistered | RegState::Failed) && self.tx.is_none() && self.tx_at.is_none()
    }

    pub fn cseq(&self) -> u32 {
        self.cseq
    }

    /// Feed one input of the table directly, as Python's `_dispatch` (tests reach the PROVISIONAL rows
    /// so: the transaction absorbs a 1xx).
    pub fn dispatch_input(&mut self, input: RegInput, response: Option<&Message>, now: f64) -> MachineResult<()> {
        self.dispatch(input, response, now)
    }

    // --- the table --------------------------------------------------------------------------
    fn protocol_error(&self, text: &str) -> MachineError {
        MachineError::Protocol(joined(&[b"registration of ", self.user(), b": ", text.as_bytes()]))
    }

    fn dispatch(&mut self, input: RegInput, response: Option<&Message>, now: f64) -> MachineResult<()> {
        let Some(&(handler, next_states)) = row(self.state, input) else {
            return Err(self.protocol_error(&format!("no transition for {} in {}", input.value(), self.state.value())));
        };
        let state = self.run(handler, response, now)?;
        if !next_states.contains(&state) {
            // a handler chose a state the table does not list: a bug here
            let allowed: Vec<&str> = next_states.iter().map(|s| s.value()).collect();
            return Err(self.protocol_error(&format!(
                "{} in {} led to {}, the table allows {}",
                input.value(),
                self.state.value(),
                state.value(),
                allowed.join(", ")
            )));
        }
        self.state = state;
        Ok(())
    }

    fn need<'m>(&self, response: Option<&'m Message>) -> MachineResult<&'m Message> {
        response.ok_or_else(|| self.protocol_error("a response input without its response"))
    }

    fn run(&mut self, handler: Handler, response: Option<&Message>, now: f64) -> MachineResult<RegState> {
        match handler {
            Handler::Ignore => Ok(self.state),
            Handler::BeginRegister => self.begin_op(Op::Register, now, None),
            Handler::BeginRefresh => {
                let scheduled = self.refresh_due.take();
                self.begin_op(Op::Refresh, now, scheduled)
            }
            Handler::BeginUnregister => self.begin_unregister(now),
            Handler::StopIdle => Ok(RegState::Unregistered),
            Handler::DeferStop => {
                self.stop_requested = true; // acted on when the request in flight has its outcome
                Ok(self.state)
            }
            Handler::StopAtRest => self.stop_without_request(self.state, now),
            Handler::Resend => {
                let credentials = self.next_credentials()?;
                self.send(now, credentials);
                Ok(self.op.busy())
            }
            Handler::OnUnregistered => Ok(self.on_unregistered()),
            Handler::OnRegistered => {
                let r = self.need(response)?;
                self.on_registered(r, now)
            }
            Handler::OnChallenge => {
                let r = self.need(response)?;
                self.on_challenge(r, now)
            }
            Handler::OnTooBrief => {
                let r = self.need(response)?;
                self.on_too_brief(r, now)
            }
            Handler::OnRetry => {
                let r = self.need(response)?;
                self.on_retry(r, now)
            }
            Handler::OnReject => {
                let r = self.need(response)?;
                let (status, reason) = match &r.start {
                    StartLine::Response { status, reason } => (*status, reason.as_slice()),
                    StartLine::Request { .. } => (0, &b""[..]),
                };
                let detail = joined(&[status.to_string().as_bytes(), b" ", reason]);
                self.give_up(reject_reason(status), Some(status), now, detail)
            }
            Handler::OnTimeout => self.fail_or_retry(FailureReason::Timeout, None, now, false, None, Vec::new()),
            Handler::OnTransportError => {
                self.fail_or_retry(FailureReason::TransportError, None, now, false, None, Vec::new())
            }
        }
    }

    // --- handlers ---------------------------------------------------------------------------
    fn begin_unregister(&mut self, now: f64) -> MachineResult<RegState> {
        self.refresh_due = None;
        self.begin_op(Op::Unregister, now, None)
    }

    fn on_unregistered(&mut self) -> RegState {
        self.bound_until = None;
        self.granted_expires = None;
        if let Some(flow) = self.flow.as_deref_mut() {
            flow.pub_gruu = None;
            flow.temp_gruu = None;
        }
        self.output.push(Output::Event(RegEvent::Unregistered {
            started_at: self.op_started,
            last_sent_at: self.attempt_sent_at,
            now: self.answered_at,
        }));
        RegState::Unregistered
    }

    fn on_registered(&mut self, response: &Message, now: f64) -> MachineResult<RegState> {
        let requested = self.expires_requested;
        let granted = match self.flow.as_deref_mut() {
            None => granted_expiry(response, self.contact(), requested),
            Some(flow) => read_flow(flow, response, self.texts.get(1), requested)?,
        };
        let status = response.status();
        if granted == 0 {
            return self.give_up(
                FailureReason::UnexpectedStatus,
                status,
                now,
                b"200 OK granted no expiry to our contact".to_vec(),
            );
        }
        self.granted_expires = Some(granted);
        self.bound_until = Some(now + granted as f64);
        let routes = [owned(response.get_list("service-route")?), owned(response.get_list("path")?)];
        self.routes = (!routes[0].is_empty() || !routes[1].is_empty()).then(|| Box::new(routes));
        self.output.push(Output::Event(RegEvent::Registered {
            op: self.op,
            expires: granted,
            started_at: self.op_started,
            last_sent_at: self.attempt_sent_at,
            now: self.answered_at,
        }));
        if self.stop_requested {
            self.stop_requested = false;
            return self.begin_unregister(now);
        }
        self.schedule_refresh(granted, now);
        Ok(RegState::Registered)
    }

    fn on_challenge(&mut self, response: &Message, now: f64) -> MachineResult<RegState> {
        let status = response.status().unwrap_or_default();
        let mut challenges = match response.challenges(status == 407) {
            Ok(c) => c,
            Err(e) => return self.give_up(FailureReason::ParseError, Some(status), now, e.0.into_bytes()),
        };
        if self.auth.is_none() {
            return self.give_up(
                FailureReason::AuthRejected,
                Some(status),
                now,
                b"challenged, no credentials".to_vec(),
            );
        }
        if !self.sent_credentials && !self.challenged_this_op {
            self.output.push(Output::Event(RegEvent::Challenged {
                op: self.op,
                sent_at: self.attempt_sent_at,
                now: self.answered_at,
            }));
        }
        if self.sent_credentials {
            // Credentials we sent were challenged again: normal when they came from a cached nonce or
            // when the server says stale=true; otherwise rejected.
            let stale = challenges.iter().any(|c| c.stale);
            if stale && self.stale_retries < MAX_STALE_RETRIES {
                self.stale_retries += 1;
            } else if !self.used_cached_nonce {
                return self.give_up(FailureReason::AuthRejected, Some(status), now, b"credentials rejected".to_vec());
            }
        }
        let chosen = {
            let Some(auth) = self.auth.as_mut() else {
                return Ok(self.state);
            };
            let mut answerable = Vec::with_capacity(challenges.len());
            for c in &challenges {
                if auth.can_answer(c) {
                    answerable.push(c);
                }
            }
            choose_challenge(&answerable, auth.preference.as_deref())
                .and_then(|chosen| challenges.iter().position(|c| std::ptr::eq(c, chosen)))
        };
        let Some(chosen) = chosen.map(|i| challenges.swap_remove(i)) else {
            let names: Vec<&[u8]> = challenges.iter().map(|c| c.algorithm_name()).collect();
            let names = if names.is_empty() { b"none".to_vec() } else { names.join(&b", "[..]) };
            let detail = joined(&[b"no digest challenge we can answer (offered: ", &names, b")"]);
            return self.give_up(FailureReason::UnsupportedAuth, Some(status), now, detail);
        };
        self.challenged_this_op = true;
        self.challenge = Some(chosen);
        let credentials = self.authorize_cached()?;
        self.send(now, credentials);
        Ok(self.state)
    }

    fn on_too_brief(&mut self, response: &Message, now: f64) -> MachineResult<RegState> {
        let header = response.get("min-expires");
        let minimum: i64 = match parse_delta(header.unwrap_or_default(), "Min-Expires") {
            Ok(m) => m as i64,
            Err(_) => -1,
        };
        self.brief_retries += 1; // a registrar raising Min-Expires forever must not loop
        if minimum <= self.expires_requested as i64 || minimum > 1 << 31 || self.brief_retries > MAX_BRIEF_RETRIES {
            let shown = header.map_or_else(|| "None".to_string(), |h| shown(h, usize::MAX));
            let detail = format!("423 with Min-Expires {shown}").into_bytes();
            return self.give_up(FailureReason::IntervalTooBrief, Some(423), now, detail);
        }
        self.expires_requested = minimum as u64;
        let credentials = self.next_credentials()?;
        self.send(now, credentials);
        Ok(self.state)
    }

    fn on_retry(&mut self, response: &Message, now: f64) -> MachineResult<RegState> {
        let retry_after = response
            .get("retry-after")
            .and_then(|v| parse_delta(v, "Retry-After").ok())
            .map(|d| py_min(d as f64, self.profile.max_retry_after));
        let status = response.status().unwrap_or_default();
        let reason = if status == 408 { FailureReason::Timeout } else { FailureReason::ServerError };
        self.fail_or_retry(reason, Some(status), now, false, retry_after, Vec::new())
    }

    // --- helpers ----------------------------------------------------------------------------
    /// The first request of operation `op`; returns the operation's state (a request in flight).
    fn begin_op(&mut self, op: Op, now: f64, scheduled: Option<f64>) -> MachineResult<RegState> {
        self.output.push(Output::Event(RegEvent::OpStarted { op, scheduled: scheduled.unwrap_or(now), now }));
        self.op = op;
        self.op_started = now;
        self.retries = 0;
        self.challenged_this_op = false;
        self.stale_retries = 0;
        self.brief_retries = 0;
        if op != Op::Refresh {
            self.expires_requested = self.profile.expires;
        }
        let credentials = self.next_credentials()?;
        self.send(now, credentials);
        Ok(op.busy())
    }

    /// `auth.authorize(challenge, "REGISTER", registrar_uri)` of the cached challenge, the cnonce
    /// drawn from our ids.
    fn authorize_cached(&mut self) -> MachineResult<Option<(&'static str, Vec<u8>)>> {
        let (Some(auth), Some(challenge)) = (self.auth.as_mut(), self.challenge.as_ref()) else {
            return Ok(None);
        };
        let ids = &mut self.ids;
        let mut cnonce = || Ok(ids.cnonce().into_bytes());
        Ok(Some(auth.authorize(challenge, b"REGISTER", &self.profile.registrar_uri, b"", &mut cnonce)?))
    }

    /// Credentials for a new request of this operation: the cached challenge with nc+1.
    fn next_credentials(&mut self) -> MachineResult<Option<(&'static str, Vec<u8>)>> {
        if !self.profile.reuse_nonce {
            return Ok(None);
        }
        self.authorize_cached()
    }

    fn send(&mut self, now: f64, credentials: Option<(&'static str, Vec<u8>)>) {
        self.cseq = self.cseq.wrapping_add(1);
        self.sent_credentials = credentials.is_some();
        self.used_cached_nonce = credentials.is_some() && !self.challenged_this_op;
        let request = self.build(credentials.as_ref().map(|(n, v)| (n.as_bytes(), v.as_slice())));
        self.pending_request = request.clone();
        self.attempt_sent_at = now;
        self.tx = None;
        self.tx_at = Some(now); // the transaction is built only if it gets another input than its final response
        self.output.push(Output::Datagram(request));
    }

    fn build(&mut self, authorization: Option<(&[u8], &[u8])>) -> Vec<u8> {
        let p = &self.profile;
        let unregister = self.op == Op::Unregister;
        let flow = self.flow.as_deref();
        let params = flow.map_or(&b""[..], |f| f.contact_params.as_slice());
        let uri = self.texts.get(1);
        let contact: &[&[u8]] = if unregister && p.unregister_all { &[b"*"] } else { &[b"<", uri, b">", params] };
        let bits = self.ids.branch_bits();
        self.branch = Some(bits);
        build_register(&RegisterFields {
            registrar_uri: &p.registrar_uri,
            transport: &p.transport,
            sent_by: self.texts.get(2),
            branch: branch_text(bits).as_bytes(),
            route: p.route.as_deref(),
            aor: &[b"sip:", self.texts.get(0), b"@", &p.domain],
            from_tag: self.texts.get(4),
            call_id: self.texts.get(3),
            cseq: self.cseq,
            contact,
            supported: flow.map(|f| f.supported.as_slice()),
            expires: if unregister { 0 } else { self.expires_requested },
            authorization,
            user_agent: &p.user_agent,
        })
    }

    fn schedule_refresh(&mut self, granted: u64, now: f64) {
        let p = &self.profile;
        let granted = granted as f64;
        let mut delay = granted * p.refresh_at;
        if p.refresh_jitter != 0.0 {
            delay += self.ids.uniform(-p.refresh_jitter, p.refresh_jitter) * granted;
        }
        delay = py_min(delay, granted - p.refresh_margin);
        self.refresh_due = Some(now + py_max(delay, py_min(granted * 0.5, 1.0)));
    }

    fn give_up(
        &mut self,
        reason: FailureReason,
        status: Option<u16>,
        now: f64,
        detail: Vec<u8>,
    ) -> MachineResult<RegState> {
        self.fail_or_retry(reason, status, now, true, None, detail)
    }

    /// Retry the operation after a backoff (BACKOFF), or give up on it (bounded by max_retries):
    /// FAILED, or UNREGISTERING when a stop was waiting for this outcome and we may be bound.
    fn fail_or_retry(
        &mut self,
        reason: FailureReason,
        status: Option<u16>,
        now: f64,
        final_: bool,
        retry_after: Option<f64>,
        detail: Vec<u8>,
    ) -> MachineResult<RegState> {
        let p = Arc::clone(&self.profile);
        let stopping = self.stop_requested && self.op != Op::Unregister;
        let (op, started_at) = (self.op, self.op_started);
        if !final_ && !stopping && self.retries < p.max_retries {
            self.retries += 1;
            let doubling = 2f64.powi(i32::try_from(self.retries - 1).unwrap_or(i32::MAX));
            let backoff = py_min(p.retry_backoff * doubling, p.retry_backoff_max);
            let delay = retry_after.unwrap_or(backoff);
            self.output.push(Output::Event(RegEvent::Failed {
                op,
                reason,
                status,
                started_at,
                now,
                final_: false,
                detail,
            }));
            self.backoff_until = Some(now + delay);
            return Ok(RegState::Backoff);
        }
        self.output.push(Output::Event(RegEvent::Failed { op, reason, status, started_at, now, final_: true, detail }));
        if op == Op::Unregister {
            return Ok(RegState::Failed); // we tried; the registrar expires the binding on its own
        }
        if self.stop_requested {
            self.stop_requested = false;
            return self.stop_without_request(RegState::Failed, now);
        }
        if op == Op::Refresh && reason.may_pass() {
            // the registrar went away (restarted?): register again after a backoff, as a phone would
            self.refresh_due = Some(now + py_max(p.retry_backoff_max, 1.0));
        }
        Ok(RegState::Failed)
    }

    /// Stop in `state` (BACKOFF or FAILED) with no request in flight: unregister if the registrar may
    /// still hold us, else stay FAILED or end UNREGISTERED.
    fn stop_without_request(&mut self, state: RegState, now: f64) -> MachineResult<RegState> {
        if state == RegState::Backoff && self.op != Op::Unregister {
            self.output.push(Output::Event(RegEvent::Failed {
                op: self.op,
                reason: FailureReason::Interrupted,
                status: None,
                started_at: self.op_started,
                now,
                final_: true,
                detail: b"stopped while waiting to retry".to_vec(),
            }));
        }
        self.backoff_until = None;
        self.refresh_due = None;
        if self.bound_until.is_some_and(|b| b > now) {
            return self.begin_op(Op::Unregister, now, None);
        }
        Ok(if state == RegState::Failed { RegState::Failed } else { RegState::Unregistered })
    }
}

fn owned(list: Vec<&[u8]>) -> Vec<Vec<u8>> {
    list.into_iter().map(<[u8]>::to_vec).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests;
