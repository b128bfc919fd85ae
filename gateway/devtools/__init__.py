"""Development tools shipped with the gateway, never on its request path: the fake upstream
(``tollgate fake-upstream``) that the README's quickstart, the tests and ``bench/`` run
instead of a real LLM server."""
