"""Coverage-guided fuzzing of the codec, the registration machine and the embedded registrar with atheris.

    pip install atheris
    PYTHONPATH=tests:. python tests/fuzz_atheris.py -max_total_time=60 /tmp/corpus   # a copy of tests/data/hostile/*

Only sipload's own modules are instrumented (fast start). A crash is written as crash-<sha1> in the
current directory (or -artifact_prefix=): add it to tests/hostile_registrar.py's corpus.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports(include=["sipload"]):
    import fuzz_targets

atheris.Setup(sys.argv, fuzz_targets.both)
atheris.Fuzz()
