"""The web dashboard (`wasmlattice ui`, and `up` starts it): a live view of one lattice and its actions.

`view.py` keeps the lattice's state from its events, its guest logs and the client API
(`client/ctl.py`, `apps/client.py`); `actions.py` carries out what the page asks for;
`server.py` serves the page (static files in `static/`), a Server-Sent Events stream and the
actions, behind a per-process token and Host/Origin checks (docs/ui.md).
"""
