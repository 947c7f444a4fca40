//! The table and a few exchanges; tests/test_native_registration.py holds the machine to the Python one.

use super::*;
use crate::digest::DigestClient;
use crate::ids::PyRandom;
use crate::message::parse_message;

const CONTACT: &[u8] = b"sip:alice@127.0.0.1:5080;transport=udp";

fn profile() -> Profile {
    Profile {
        domain: b"sipload.test".to_vec(),
        registrar_uri: b"sip:sipload.test".to_vec(),
        expires: 60,
        ..Profile::default()
    }
}

fn make(p: Profile) -> Registration<PyRandom> {
    let auth = DigestClient::new(b"alice", Some(b"pw-alice"), None, None, None, None).unwrap();
    Registration::new(Arc::new(p), b"alice", CONTACT, b"127.0.0.1:5080", Some(auth), PyRandom::new(1), None, 1).unwrap()
}

fn sent(reg: &mut Registration<PyRandom>) -> Message {
    let out = reg.take_outgoing();
    assert_eq!(out.len(), 1, "{out:?}");
    parse_message(&out[0]).unwrap()
}

/// A response to `req` (Via, From, To, Call-ID, CSeq copied) with `extra` header lines.
fn answer(req: &Message, status: u16, extra: &str) -> Message {
    let mut text = format!("SIP/2.0 {status} Whatever\r\n").into_bytes();
    for (name, value) in &req.headers {
        if ["via", "from", "to", "call-id", "cseq"].contains(&name) {
            text.extend_from_slice(name.as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(value);
            text.extend_from_slice(b"\r\n");
        }
    }
    text.extend_from_slice(extra.as_bytes());
    text.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    parse_message(&text).unwrap()
}

const CHALLENGE: &str =
    "WWW-Authenticate: Digest realm=\"sipload.test\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"\r\n";
const GRANTED: &str = "Contact: <sip:alice@127.0.0.1:5080;transport=udp>;expires=60\r\n";

#[test]
fn the_index_holds_every_row_once() {
    let mut seen = std::collections::HashSet::new();
    for ((state, input), entry) in TABLE {
        assert!(seen.insert((*state, *input)), "{state:?} {input:?} twice");
        assert_eq!(row(*state, *input), Some(entry));
        assert!(!entry.1.is_empty());
    }
    assert_eq!(seen.len(), TABLE.len());
}

#[test]
fn every_pair_without_a_row_is_a_protocol_error() {
    let reg = make(profile());
    let ok = answer(&parse_message(b"REGISTER sip:h SIP/2.0\r\nCSeq: 1 REGISTER\r\n\r\n").unwrap(), 200, GRANTED);
    let mut unlisted = 0;
    for state in RegState::ALL {
        for input in RegInput::ALL {
            if row(state, input).is_some() {
                continue;
            }
            unlisted += 1;
            let mut r = reg.clone();
            r.state = state;
            let e = r.dispatch(input, Some(&ok), 0.0).unwrap_err();
            let want = format!("registration of alice: no transition for {} in {}", input.value(), state.value());
            assert_eq!(e, MachineError::Protocol(want.into_bytes()));
            assert_eq!(r.state, state);
            assert!(r.take_outgoing().is_empty() && r.take_events().is_empty());
        }
    }
    assert_eq!(unlisted + TABLE.len(), 8 * 12);
    let mut twice = reg.clone();
    twice.start(0.0).unwrap();
    assert!(twice.start(0.0).is_err());
}

#[test]
fn challenge_then_registered_one_call_id_rising_cseq() {
    let mut reg = make(profile());
    reg.start(10.0).unwrap();
    let first = sent(&mut reg);
    assert_eq!(first.cseq().unwrap(), (1, &b"REGISTER"[..]));
    assert!(first.get("authorization").is_none());
    assert!(reg.receive(&answer(&first, 401, CHALLENGE), 10.004, None).unwrap());
    let second = sent(&mut reg);
    assert_eq!(second.call_id().unwrap(), first.call_id().unwrap());
    assert_eq!(second.cseq().unwrap().0, 2);
    let auth = second.get("authorization").unwrap();
    assert!(auth.starts_with(b"Digest username=\"alice\", realm=\"sipload.test\", nonce=\"n1\""), "{auth:?}");
    assert!(auth.ends_with(b"qop=auth, nc=00000001"));
    // a retransmitted 401 to the first request is stray
    assert!(!reg.receive(&answer(&first, 401, CHALLENGE), 10.005, None).unwrap());
    assert!(reg.receive(&answer(&second, 200, GRANTED), 10.010, None).unwrap());
    let events = reg.take_events();
    assert_eq!(events[1], RegEvent::Challenged { op: Op::Register, sent_at: 10.0, now: 10.004 });
    assert_eq!(
        events[2],
        RegEvent::Registered { op: Op::Register, expires: 60, started_at: 10.0, last_sent_at: 10.004, now: 10.010 }
    );
    assert_eq!(reg.state, RegState::Registered);
    assert_eq!(reg.refresh_due(), Some(40.010));
    // the refresh reuses the nonce (nc 2), the unregister too (nc 3)
    reg.handle_timer(40.010).unwrap();
    let refresh = sent(&mut reg);
    assert!(refresh.get("authorization").unwrap().ends_with(b"nc=00000002"));
    reg.receive(&answer(&refresh, 200, GRANTED), 40.011, None).unwrap();
    reg.stop(41.0).unwrap();
    let unregister = sent(&mut reg);
    assert_eq!(unregister.get("expires"), Some(&b"0"[..]));
    assert_eq!(unregister.cseq().unwrap().0, 4);
    reg.receive(&answer(&unregister, 200, ""), 41.001, None).unwrap();
    assert_eq!(reg.state, RegState::Unregistered);
    assert!(reg.finished());
}

#[test]
fn total_loss_times_out_with_bounded_retries() {
    let mut reg = make(Profile { max_retries: 2, ..profile() });
    reg.start(0.0).unwrap();
    let mut sends = reg.take_outgoing().len();
    let mut now = 0.0;
    while let Some(deadline) = reg.next_timer() {
        now = deadline;
        reg.handle_timer(now).unwrap();
        sends += reg.take_outgoing().len();
    }
    let events = reg.take_events();
    let failures: Vec<(FailureReason, bool)> = events
        .iter()
        .filter_map(|e| match e {
            RegEvent::Failed { reason, final_, .. } => Some((*reason, *final_)),
            _ => None,
        })
        .collect();
    assert_eq!(
        failures,
        [(FailureReason::Timeout, false), (FailureReason::Timeout, false), (FailureReason::Timeout, true)]
    );
    assert_eq!(events.iter().filter(|e| matches!(e, RegEvent::Retransmitted { .. })).count(), 30);
    assert_eq!(sends, 33);
    assert_eq!(now, 3.0 * 32.0 + 1.0 + 2.0);
    assert_eq!(reg.state, RegState::Failed);
}

#[test]
fn min_expires_retry_after_and_rejections() {
    let mut reg = make(profile());
    reg.start(0.0).unwrap();
    let first = sent(&mut reg);
    reg.receive(&answer(&first, 423, "Min-Expires: 120\r\n"), 0.0, None).unwrap();
    let second = sent(&mut reg);
    assert_eq!(second.get("expires"), Some(&b"120"[..]));
    reg.receive(&answer(&second, 503, "Retry-After: 7\r\n"), 0.5, None).unwrap();
    assert_eq!((reg.state, reg.next_timer()), (RegState::Backoff, Some(7.5)));
    reg.handle_timer(7.5).unwrap();
    let third = sent(&mut reg);
    assert_eq!(third.get("expires"), Some(&b"120"[..])); // the same operation keeps what the 423 asked
    reg.receive(&answer(&third, 403, ""), 8.0, None).unwrap();
    let last = reg.take_events().pop().unwrap();
    assert_eq!(
        last,
        RegEvent::Failed {
            op: Op::Register,
            reason: FailureReason::Forbidden,
            status: Some(403),
            started_at: 0.0,
            now: 8.0,
            final_: true,
            detail: b"403 Whatever".to_vec()
        }
    );
    assert!(reg.finished());
}

#[test]
fn stop_while_registering_unregisters_after_the_200() {
    let mut reg = make(profile());
    reg.start(0.0).unwrap();
    let first = sent(&mut reg);
    reg.stop(0.001).unwrap();
    assert!(reg.take_outgoing().is_empty());
    reg.receive(&answer(&first, 200, GRANTED), 0.002, None).unwrap();
    let unregister = sent(&mut reg);
    assert_eq!(unregister.get("expires"), Some(&b"0"[..]));
    assert_eq!(reg.state, RegState::Unregistering);
}

#[test]
fn unparseable_service_route_is_a_parse_error_as_in_python() {
    let mut reg = make(profile());
    reg.start(0.0).unwrap();
    let first = sent(&mut reg);
    let bad = answer(&first, 200, &format!("{GRANTED}Service-Route: <sip:a>, \"open\r\n"));
    assert!(matches!(reg.receive(&bad, 0.1, None), Err(MachineError::Parse(_))));
    assert_eq!((reg.state, reg.granted_expires, reg.next_timer()), (RegState::Registering, Some(60), None));
}

#[test]
fn random_inputs_never_panic() {
    let mut rng = PyRandom::new(99);
    let statuses = [100, 180, 200, 401, 407, 403, 404, 408, 423, 480, 486, 500, 503, 699];
    let extras = [
        "",
        CHALLENGE,
        GRANTED,
        "Min-Expires: 99999999999\r\n",
        "Retry-After: 4294967295\r\n",
        "WWW-Authenticate: Digest realm=\"x\", nonce=\"n\", algorithm=ROT13\r\n",
        "WWW-Authenticate: Digest realm=\"unterminated\r\n",
        "Contact: <sip:a@h\r\nExpires: 9\r\n",
        "Service-Route: \"x\r\n",
        "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", stale=true, qop=\"auth-int\", algorithm=SHA-256-sess\r\n",
    ];
    for _ in 0..200 {
        let mut reg = make(Profile { max_retries: 2, refresh_jitter: 0.1, ..profile() });
        let mut now = 0.0;
        let mut last: Option<Message> = None;
        for _ in 0..40 {
            for data in reg.take_outgoing() {
                last = Some(parse_message(&data).unwrap());
            }
            now += 0.01;
            let _ = match rng.next_u32() % 6 {
                0 => reg.start(now),
                1 => reg.stop(now),
                2 => {
                    now = reg.next_timer().map_or(now, |d| py_max(d, now));
                    reg.handle_timer(now)
                }
                3 => reg.transport_error(now),
                4 => reg.flow_failed(now),
                _ => match &last {
                    Some(req) => {
                        let status = statuses[rng.next_u32() as usize % statuses.len()];
                        let extra = extras[rng.next_u32() as usize % extras.len()];
                        let text = answer(req, status, extra);
                        reg.receive(&text, now, Some(now - 0.001)).map(|_| ())
                    }
                    None => Ok(()),
                },
            };
            reg.take_events();
        }
    }
}
