"""Serving an artifact: bulk ``map`` on Ray Data, HTTP on Ray Serve, a Triton model repository."""
