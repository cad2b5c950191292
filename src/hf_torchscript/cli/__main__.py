"""``python -m hf_torchscript.cli``: the same as the ``hf-torchscript`` command."""

import sys

from .main import main

sys.exit(main())
