"""Model artifacts as bytes: `np.savez` of plain arrays (sparse matrices as their CSR parts), no pickle."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import scipy.sparse as sp

# category paths are stored as one string per product, levels joined by this separator
CATEGORY_SEPARATOR = "\x1f"


def artifact_dump(arrays: dict[str, np.ndarray | sp.spmatrix]) -> bytes:
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
    out: dict[str, np.ndarray | sp.csr_matrix] = {}
    with np.load(io.BytesIO(bytes(blob)), allow_pickle=False) as archive:
        names = set(archive.files)
        for name in names:
            if name.endswith("__data"):
                base = name.removesuffix("__data")
                out[base] = sp.csr_matrix(
                    (archive[name], archive[f"{base}__indices"], archive[f"{base}__indptr"]),
                    shape=tuple(archive[f"{base}__shape"]),
                )
            elif "__" not in name:
                out[name] = archive[name]
    return out
