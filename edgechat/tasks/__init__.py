"""What the user asks for: documents, summaries, conversations."""
