"""Serving an artifact: the one-process HTTP server (http.py), bulk ``map`` on Ray Data, Ray Serve, Triton."""
