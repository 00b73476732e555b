from pathlib import Path

# The Faust shell builds its App from the environment at import time, so doctest collection
# must not import it bare; tests/agents and tests/integration import it with settings in place.
# Its modules that import no Faust (flush_marks) keep their doctests.
_SHELL = Path(__file__).parent / "streamer" / "shell"
_NO_FAUST = {"flush_marks.py"}
collect_ignore = [str(path) for path in _SHELL.glob("*.py") if path.name not in _NO_FAUST]
