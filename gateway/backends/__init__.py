"""Calling model backends: the contract (``upstream``), the litellm adapter and its error
mapping, the OpenAI-compatible fast path and the replay backend. The only package that imports
litellm, which reads its settings from the environment when it is imported: the package
applies them (``gateway.settings.apply_process_env``) before any of its modules loads."""

from gateway.settings import apply_process_env

apply_process_env()
