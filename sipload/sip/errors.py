"""Exceptions raised by the sans-IO SIP core."""


class SipError(Exception):
    """Base class of every error the SIP core raises on purpose."""


class ParseError(SipError):
    """Bytes that are not a valid SIP message (or header value); the message says what is wrong."""


class ProtocolError(SipError):
    """An input a state machine has no transition for (e.g. a response in state Terminated)."""
