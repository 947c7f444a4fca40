"""sipload: a SIP user-agent load tester and registration simulator."""

__version__ = "0.1.0"
