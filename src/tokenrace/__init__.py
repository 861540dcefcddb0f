"""tokenrace: measure, rank and route LLM endpoints by speed, quality and cost."""

__version__ = "0.1.0"
