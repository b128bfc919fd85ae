"""The HTTP edge: routes, request bodies, SSE and error responses over ``gateway.serve``'s
pipeline. Handlers validate, authenticate, call the pipeline and render; they hold no SQL. The
only package that imports FastAPI (besides the app factory and the replay server)."""
