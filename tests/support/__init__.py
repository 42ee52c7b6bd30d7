"""Helpers shared by the tests; `tests/conftest.py` holds only the fixtures built on them.

- `components`: building the test guests (componentize-py folders, component text) and tool paths.
- `processes`: free ports, server and host subprocesses, redis-server, a background nats-server.
- `cli`: running `wasmlattice ...` as a user would.
- `http`: the upstream test server, HTTP clients and polling helpers.
- `lattice`: `LatticeEnv` (hosts, control client, events) and lattice set-up helpers.
"""
