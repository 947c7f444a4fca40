"""Why a registration failed: one enum, counted per reason in every output."""

from __future__ import annotations

import enum


class FailureReason(enum.StrEnum):
    TIMEOUT = "timeout"                      # Timer F fired: no final response
    AUTH_REJECTED = "auth_rejected"          # credentials answered with another challenge (wrong password)
    FORBIDDEN = "forbidden"                  # 403
    NOT_FOUND = "not_found"                  # 404
    INTERVAL_TOO_BRIEF = "interval_too_brief"  # 423 that could not be satisfied
    SERVER_ERROR = "server_error"            # 5xx after the retries allowed
    UNEXPECTED_STATUS = "unexpected_status"  # any other final response
    TRANSPORT_ERROR = "transport_error"      # the socket or connection failed
    PARSE_ERROR = "parse_error"              # the response could not be parsed
    UNSUPPORTED_AUTH = "unsupported_auth"    # no challenge with an algorithm we support
    INTERRUPTED = "interrupted"              # the run was stopped before an answer came

    @property
    def may_pass(self) -> bool:
        """A failure that may pass: no answer, a broken transport or a server error (the registrar may have
        restarted or be overloaded). Such a failed refresh is tried again later, and a failure of this kind
        moves an endpoint to the next server of its target (RFC 3263 §4.3); any other failure is an answer."""
        return self in _MAY_PASS


_MAY_PASS = frozenset({FailureReason.TIMEOUT, FailureReason.TRANSPORT_ERROR, FailureReason.SERVER_ERROR})
