"""The embedded registrar: sans-IO core (digest, binding store, fault injection) and its trio server."""

from sipload.registrar.bindings import Binding, BindingStore, UserState, UserStatus
from sipload.registrar.core import Outcome, RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import DelaySpec, RegistrarSettings, load_users, parse_delay

__all__ = [
    "Binding",
    "BindingStore",
    "DelaySpec",
    "Listen",
    "Outcome",
    "RegistrarCore",
    "RegistrarSettings",
    "UserState",
    "UserStatus",
    "load_users",
    "parse_delay",
    "serve_registrar",
]
