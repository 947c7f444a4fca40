"""sipload.emulators: the HTTP side of the embedded registrar: emulators of the providers' status APIs
(Telnyx, Audian, Ultravox), backed by the registrar's real binding store. See `app.serve_api`."""

from sipload.emulators.app import Emulators, serve_api
from sipload.emulators.knobs import ApiKeys, ApiKnobs

__all__ = ["ApiKeys", "ApiKnobs", "Emulators", "serve_api"]
