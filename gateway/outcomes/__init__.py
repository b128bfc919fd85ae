"""The success side of a request: recording whether a task succeeded (client feedback,
validators, the judge), off the request path. The pipeline reaches it only through the
``OutcomeHooks`` the app factory wires in (``hooks``); ``gateway.serve`` never imports it."""
