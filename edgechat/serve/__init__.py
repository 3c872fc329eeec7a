"""The HTTP server: OpenAI's and Ollama's APIs over one llama thread that batches replies."""
