"""A real uvicorn server for tests: an ASGI app served in a thread on a free port of 127.0.0.1."""

from __future__ import annotations

import threading
import time


class Running:
    """uvicorn serving ``app`` (serving.http.build_app) in a thread; ``url``, ``engine``, ``stop()``."""

    def __init__(self, app, **config):
        import uvicorn

        from hf_torchscript.serving.http import KEEP_ALIVE_S

        config.setdefault("timeout_keep_alive", KEEP_ALIVE_S)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="on", **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.time() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        self.engine = app.state.engine

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)
