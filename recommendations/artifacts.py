"""Model artifacts as bytes: `np.savez` of plain arrays (sparse matrices as their CSR parts), no pickle."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

# category paths are stored as one string per product, levels joined by this separator
CATEGORY_SEPARATOR = "\x1f"


def flat_arrays(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Plain arrays only: each sparse matrix as its CSR parts (`name__data`, `__indices`, `__indptr`,
    `__shape`). The artifact stores these, and so does serving's file cache (one file of them all)."""
    flat: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if sp.issparse(value):
            matrix = sp.csr_matrix(value)
            flat[f"{name}__data"] = matrix.data
            flat[f"{name}__indices"] = matrix.indices
            flat[f"{name}__indptr"] = matrix.indptr
            flat[f"{name}__shape"] = np.array(matrix.shape, dtype=np.int64)
        else:
            flat[name] = np.asarray(value)
    return flat


def arrays_from_flat(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The arrays back, sparse matrices rebuilt from their parts without copying them (so memory-mapped
    parts stay mapped)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        if name.endswith("__data"):
            base = name.removesuffix("__data")
            out[base] = sp.csr_matrix(
                (value, flat[f"{base}__indices"], flat[f"{base}__indptr"]),
                shape=tuple(int(n) for n in flat[f"{base}__shape"]),
                copy=False,
            )
        elif "__" not in name:
            out[name] = value
    return out


def artifact_dump(arrays: dict[str, np.ndarray | sp.spmatrix]) -> bytes:
    flat = flat_arrays(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **flat)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle  # uncompressed: every serving process loads it, and loading must be quick
    return buffer.getvalue()


class ArtifactError(ValueError):
    """The bytes are not a readable artifact (empty, torn, or not one at all)."""


def artifact_load(blob: bytes) -> dict[str, np.ndarray | sp.csr_matrix]:
    try:
        return _artifact_load(blob)
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ArtifactError(f"unreadable artifact: {error}") from error


def _artifact_load(blob: bytes) -> dict[str, np.ndarray | sp.csr_matrix]:
    with np.load(io.BytesIO(bytes(blob)), allow_pickle=False) as archive:
        return arrays_from_flat({name: archive[name] for name in archive.files})
