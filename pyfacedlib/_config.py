"""Settings fields that carry their own command-line help (one place for a default and its help).

Every config dataclass (AlignmentSettings, GalleryConfig, ArchiveConfig, IndexSettings,
ClusterSettings, FinetuneConfig) declares its fields with `option()`; the CLI (pyfacedlib.cli) builds
its options from them, so a default is written once, in the library.
"""
from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str, *, choices: tuple | None = None, flag: str | None = None,
           cli: bool = True) -> Any:
    """A dataclass field with its default and CLI metadata: `help`; `choices` (a fixed set);
    `flag` (the option's name when not --field-name, e.g. --no-exif); cli=False keeps it off the CLI."""
    metadata: dict[str, Any] = {"help": help, "cli": cli}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if flag is not None:
        metadata["flag"] = flag
    return field(default=default, metadata=metadata)
