"""The sans-IO SIP core: messages, digest, transactions, registration. No trio, no sockets, no clock."""

from sipload.sip.errors import ParseError, ProtocolError, SipError
from sipload.sip.headers import NameAddr, SipUri, Via, parse_name_addr, parse_uri, parse_via
from sipload.sip.message import Headers, Message, Request, Response, response_to
from sipload.sip.parser import StreamFramer, parse_message

__all__ = [
    "Headers",
    "Message",
    "NameAddr",
    "ParseError",
    "ProtocolError",
    "Request",
    "Response",
    "SipError",
    "SipUri",
    "StreamFramer",
    "Via",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "response_to",
]
