"""The OpenAI-compatible HTTP server: wire format, the llama thread and its queue, routes."""
