"""Local inference engines: tokenrace can start a llama.cpp server itself, so a laptop with no API key
still has a real endpoint to measure. ``models`` finds the GGUF weights (short name, path or hub)."""
