"""The request pipeline, as values and without HTTP: a request's facts, routing, budget and
rate limits, the response cache, dispatch to backends, the SSE relay, and the one finish step
that every request, plain or streamed, ends in exactly once (``finish``)."""
