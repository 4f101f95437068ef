"""The shapes of the names zoomtune accepts, in one place.

Names end up in Redis keys, folder names, CSV headers and Python keyword arguments, so each is
kept plain. Check them with `fullmatch` only: `re.match(r"^...$")` lets a trailing newline
through (`$` also matches before a final "\\n"), and "demo\\n" would name a run folder that
`coordinator status demo` cannot find.
"""

from __future__ import annotations

import re

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
STUDY_NAME_RULE = (
    "a study name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit "
    "(it names Redis keys and folders)"
)

OBJECTIVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
OBJECTIVE_NAME_RULE = (
    "an objective name is 1 to 128 letters, digits, '_', '.' or '-', starting with a letter "
    "or digit"
)

PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""Parameter names: identifiers of at most 64 characters (CSV columns and keyword arguments)."""

ENTRYPOINT = re.compile(r"(?P<module>[^:\s]+):(?P<function>[A-Za-z_][A-Za-z0-9_]*)")
"""`module:function` or `path/to/file.py:function`."""

KEY_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}:")
"""ZOOMTUNE_PREFIX: 1 to 64 plain characters ending with ':'."""
