"""Everything that touches llama.cpp: the backend, the engine, prompts."""
