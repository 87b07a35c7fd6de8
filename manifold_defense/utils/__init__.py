"""Room 0, ``utils``: what every other room needs and nothing else: input validation
(:func:`check_images`), threat-model geometry (Linf / L2 balls) and the command-line helpers that make
every tool answer a bad flag with one ``error:`` line and exit status 2.

May import: torch, numpy and the standard library only (no other room).
"""

from .cli import USER_ERRORS, ToolParser, integer, integers, names, real, reals, run
from .threat import Norm, clip_to_ball, project_delta
from .validation import check_images, module_device_dtype

__all__ = ["check_images", "module_device_dtype", "Norm", "clip_to_ball", "project_delta", "ToolParser", "integer",
           "integers", "real", "reals", "names", "run", "USER_ERRORS"]
