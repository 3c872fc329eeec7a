"""What the machine and a model file are: device, GGUF headers, live readouts, health checks."""
