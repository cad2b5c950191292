"""TorchScript's deprecation upstream, handled in one place.

torch 2.13 warns on every call of the TorchScript API we use (exact texts in docs/formats.md):

    DeprecationWarning: `torch.jit.trace` is deprecated. Please switch to `torch.compile` or `torch.export`.
    (likewise torch.jit.script, torch.jit.save and torch.jit.load -> "Please switch to `torch.export`.",
    and torch.jit.freeze -> "Please use `torch.compile` instead.")

hf-torchscript calls these on purpose: the TorchScript format is one of the two it produces, and
the warning says nothing a user can act on inside our call. So each call site runs inside
``jit_api()``, which hides exactly these DeprecationWarnings for the duration of the call (a
restored ``warnings.catch_warnings``, no lasting filter), and users are told once: in the export
summary of a TorchScript export (``NOTICE``) and in docs/formats.md, which says how to pick
between the formats. Python 3.14's different warning ("... is not supported in Python 3.14+ and
may break") is not hidden: that one is actionable.
"""

from __future__ import annotations

import contextlib
import warnings

# Matches the torch 2.5-2.13 wording; the 3.14 wording does not start with "is deprecated".
_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"

NOTICE = "note: TorchScript is deprecated upstream, --backend aoti writes torch.export's format (docs/formats.md)"


# torch 2.13's C++ warning (once per process) when an int8 (dynamic-int8) module is loaded: the quantized
# dtypes it uses are on their way out upstream. Said once in docs/performance.md, not on every `run`.
QUANTIZED_DEPRECATED = (r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor "
                        r"creation functions .* are deprecated")


@contextlib.contextmanager
def jit_api():
    """Run a torch.jit call without its 'is deprecated' DeprecationWarning (only that warning), nor the
    quantized-tensor deprecation notice that loading an int8 module raises."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED, category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=QUANTIZED_DEPRECATED)
        yield
