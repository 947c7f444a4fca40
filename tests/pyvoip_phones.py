"""A few pyVoIP phones as an independent third-party UA, run as a subprocess by tests/test_interop_pyvoip.py.

pyVoIP is GPL: it is used here, in a test helper process, and never imported by the sipload package.

    python tests/pyvoip_phones.py --port PORT --user user1:5301 --user user2:5302 [--expires 7]

Each phone registers to 127.0.0.1:PORT from 127.0.0.1:<its port> (pyVoIP sends MD5 digest without
qop, with its own digest uri "sip:<server>;transport=UDP" and a new Call-ID for every registration).
The process prints one JSON object per line on stdout:

    {"event": "registered", "user": "user1", "port": 5301, "status": "REGISTERED"}   (per phone)
    {"event": "ready"}                                                               (all started)
    {"event": "stopped", "user": "user1", "status": "INACTIVE"}                      (per phone)
    {"event": "done"}
    {"event": "error", "user": "user1", "error": "..."}                              (a phone failed)

After "ready" it waits for a line "stop" on stdin (or EOF), stops the phones (pyVoIP unregisters
with Expires: 0) and exits. Every phone runs in pyVoIP's own threads; the parent bounds the whole
process with a timeout and kills it if needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True, help="registrar port on 127.0.0.1")
    parser.add_argument("--user", action="append", required=True, help="USER:LOCAL_PORT (repeatable)")
    parser.add_argument("--password", default="pw-{user}", help="password template, {user} = the user")
    parser.add_argument("--expires", type=int, default=120, help="Expires the phones ask for (pyVoIP: 120)")
    args = parser.parse_args()

    warnings.simplefilter("ignore", DeprecationWarning)  # pyVoIP imports audioop
    from pyVoIP.VoIP import VoIPPhone

    phones: list[tuple[str, Any]] = []
    failed = False
    for spec in args.user:
        user, _, port_text = spec.partition(":")
        port = int(port_text)
        phone = VoIPPhone(
            "127.0.0.1", args.port, user, args.password.replace("{user}", user),
            myIP="127.0.0.1", sipPort=port, rtpPortLow=port, rtpPortHigh=port,
        )
        # pyVoIP re-registers (expires - 5) s after each registration, with a new Call-ID.
        phone.sip.default_expires = args.expires
        phone.sip.register_timeout = 5  # seconds to wait for each response (pyVoIP: 30)
        try:
            phone.start()
        except Exception as exc:  # InvalidAccountInfoError, TimeoutError, ...
            emit(event="error", user=user, error=f"{type(exc).__name__}: {exc}")
            failed = True
            break
        phones.append((user, phone))
        emit(event="registered", user=user, port=port, status=phone.get_status().name)
    if not failed:
        emit(event="ready")
        sys.stdin.readline()  # "stop" or EOF
    for user, phone in phones:
        try:
            phone.stop()
        except Exception as exc:
            emit(event="error", user=user, error=f"{type(exc).__name__}: {exc}")
            failed = True
            continue
        emit(event="stopped", user=user, status=phone.get_status().name)
    emit(event="done")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
