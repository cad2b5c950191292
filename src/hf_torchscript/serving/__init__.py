"""Serving an exported artifact: the one-process HTTP server (http.py) and the ways to scale it out."""
