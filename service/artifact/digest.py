"""A digest of a skops model file that depends on the fitted model only, not on the process that wrote it.

skops names each array file inside its zip, and each object in `schema.json`, by `id()` of the Python object at
save time, so two trainings of the same data with the same seed write different bytes. The digest reads the file
as data (nothing is constructed): each array file's name becomes the sha256 of its bytes, and each object id its
rank in order of first appearance; the digest is over that canonical schema. Changing any array, any parameter or
the structure still changes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from typing import Any

__all__ = ["model_digest"]

_SCHEMA = "schema.json"
_ID = "__id__"


def model_digest(model_bytes: bytes) -> bytes:
    """sha256 of the canonical form of a skops file; `ValueError` if it is not one."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            schema = json.loads(archive.read(_SCHEMA))
            files = {
                name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist() if name != _SCHEMA
            }
    except (zipfile.BadZipFile, KeyError, ValueError, zlib.error, EOFError, OSError) as error:
        raise ValueError(f"not a skops file: {error}") from error
    ranks: dict[int, int] = {}
    canonical = _canonical(schema, files, ranks)
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).digest()


def _canonical(node: Any, files: dict[str, str], ranks: dict[int, int]) -> Any:
    if isinstance(node, list):
        return [_canonical(item, files, ranks) for item in node]
    if not isinstance(node, dict):
        return files.get(node, node) if isinstance(node, str) else node
    result: dict[str, Any] = {}
    for key in sorted(node):
        value = node[key]
        if key == _ID and type(value) is int:
            result[key] = ranks.setdefault(value, len(ranks))
        elif key == "content" and node.get("__loader__") == "CachedNode" and type(value) is int:
            result[key] = ranks.setdefault(value, len(ranks))  # a reference to an object saved earlier
        else:
            result[key] = _canonical(value, files, ranks)
    return result
