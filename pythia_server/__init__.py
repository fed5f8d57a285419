"""Pythia's gateway: serves the OpenAI API in front of SGLang runtimes and learns workflows."""

__version__ = "0.1.0"
