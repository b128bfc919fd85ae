"""``python -m gateway.devtools.fake_upstream``: serve the fake upstream (see ``server``)."""

from gateway.devtools.fake_upstream.server import main

main()
