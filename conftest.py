# The Faust shell builds its App from the environment at import time, so doctest collection
# must not import it bare; tests/agents and tests/integration import it with settings in place.
collect_ignore_glob = ["streamer/shell/*"]
