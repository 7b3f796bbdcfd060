"""Loaded state: each store's active model and its catalog, held per process and keyed by the store's
generation (bumped by catalog writes, settings and activations), so that a computed answer reads memory,
not SQL.

Models are written once to a local file cache (`MODEL_CACHE_DIR`, one folder per model version: its
arrays in one file, and their index) and memory-mapped from there, one mapping a version: the worker
processes of a host share the OS page cache instead of each holding a copy. Both models and catalogs
are evicted least-recently-used by bytes, and nothing else holds them: the per-store map keeps only a
model *id* under a generation.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import scipy.sparse as sp
from django.conf import settings

from catalog.selectors import CatalogColumns, product_columns, product_internal_ids
from core.observability import SERVING_BYTES, SERVING_LOADS
from recommendations.artifacts import (
    CATEGORY_SEPARATOR,
    ArtifactError,
    arrays_from_flat,
    artifact_load,
    flat_arrays,
)
from recommendations.engine.interactions import IdIndex
from recommendations.engine.ranker import FeatureSource, load_ranker, ranker_features
from recommendations.engine.recommender import SequentialItemKNN
from recommendations.selectors import (
    ActiveModelRow,
    trained_model_active,
    trained_model_artifact,
    trained_model_version,
)
from tenants.models import Store

logger = logging.getLogger(__name__)
TOP_CANDIDATES = 5000
COLD_ARRAYS = ("cold_rows", "cold_factors", "warm_rows", "warm_factors")
_ESTIMATOR_DEFAULTS = SequentialItemKNN()  # the estimator's own defaults, for artifacts that omit one


# --- models -------------------------------------------------------------------------------------
@dataclass
class ServingModel:
    model_id: int
    version: int
    parameters: dict[str, Any]
    products: IdIndex
    neighbours: sp.csr_matrix
    similar: sp.csr_matrix
    transitions: sp.csr_matrix
    together: sp.csr_matrix
    vectors: np.ndarray  # content vectors, as stored (half precision): convert the rows read
    popularity: np.ndarray
    category_paths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    content: sp.csr_matrix | None = None  # nearest items by content of the items that need them
    # products with no events: their factors as their content predicts them, and the warm items' factors
    # (recommendations/engine/coldstart.py); their related products are the nearest warm items
    cold: sp.csr_matrix | None = None  # items x items: each cold product's nearest warm items
    # (versions trained before `cold`: the factors, searched when asked)
    cold_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # model positions, sorted
    cold_factors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))
    warm_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    warm_factors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    popularity_order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    category_items: dict[str, np.ndarray] = field(default_factory=dict)
    top_popular: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted positions
    # complete-the-look's learned rules: leaf category -> [(category that goes with it, lift, support)],
    # best lift first
    compatibility: dict[str, list[tuple[str, float, int]]] = field(default_factory=dict)
    # the merchant's product embeddings (unit rows, zero where none): complete-the-look's style
    style: np.ndarray | None = None
    # the ranking stage (recommendations/engine/ranker.py), when this version learned one that beat the
    # first stage on validation: the LightGBM model, and the arrays its features read
    ranker: Any = None
    ranker_width: int = 0  # how many of the features it reads (ranker_features)
    features: FeatureSource | None = None
    nbytes: int = 0

    def __post_init__(self) -> None:
        order = np.argsort(-self.popularity, kind="stable")
        self.popularity_order = order[self.popularity[order] > 0]
        self.top_popular = np.sort(self.popularity_order[:TOP_CANDIDATES])
        # category level -> its items, so that a category's trending is a numpy mask
        members: dict[str, list[int]] = {}
        for index, path in enumerate(self.category_paths.tolist()):
            for level in path.split(CATEGORY_SEPARATOR) if path else ():
                members.setdefault(level, []).append(index)
        self.category_items = {level: np.array(items, dtype=np.int64) for level, items in members.items()}
        self.nbytes = sum(
            part.nbytes
            for part in (
                self.products.ids, self.vectors, self.popularity, self.popularity_order,
                *((self.style,) if self.style is not None else ()),
                self.cold_rows, self.cold_factors, self.warm_rows, self.warm_factors,
                *(m.data for m in self._matrices()), *(m.indices for m in self._matrices()),
                *(m.indptr for m in self._matrices()), *self.category_items.values(),
            )
        )  # fmt: skip

    def _matrices(self) -> tuple[sp.csr_matrix, ...]:
        extra = (self.features.arrivals, self.features.tags) if self.features is not None else ()
        held = (
            self.neighbours,
            self.similar,
            self.transitions,
            self.together,
            self.content,
            self.cold,
            *extra,
        )
        return tuple(matrix for matrix in held if matrix is not None)

    def cold_neighbours(self, position: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """A product with no events: the `k` warm items nearest to its predicted factors, as (model
        positions, scores), best first; empty for any other product. Read from the version's `cold` matrix
        (cosine scores, plus the popularity prior in versions trained since 2026-12-06); versions trained
        before it hold the factors, and are searched here (cosine scores)."""
        if self.cold is not None:
            start, end = self.cold.indptr[position], self.cold.indptr[position + 1]
            items, scores = self.cold.indices[start:end], self.cold.data[start:end]
            order = np.argsort(-scores, kind="stable")[:k]
            return items[order].astype(np.int64), np.asarray(scores[order], np.float32)
        at = int(np.searchsorted(self.cold_rows, position))
        if at >= self.cold_rows.size or self.cold_rows[at] != position or not self.warm_rows.size:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = np.asarray(self.warm_factors, np.float32) @ self.cold_factors[at].astype(np.float32)
        k = min(k, scores.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        keep = scores[top] > 0
        return self.warm_rows[top[keep]], scores[top[keep]]

    def parameter(self, name: str) -> float:
        """A scoring parameter as tuned for this version, else the estimator's default."""
        return float(self.parameters.get(name, getattr(_ESTIMATOR_DEFAULTS, name)))

    def trending_order(self, category: str | None) -> np.ndarray:
        if not category or not self.category_items:
            return self.popularity_order[:TOP_CANDIDATES]
        items = self.category_items.get(category)
        if items is None:
            return np.zeros(0, np.int64)
        return self.popularity_order[np.isin(self.popularity_order, items)][:TOP_CANDIDATES]

    @property
    def ranker_off(self) -> str:
        """Why this version serves without a ranking stage ("" when it has one, or never tried one)."""
        return "" if self.ranker is not None else str(self.parameters.get("ranking_stage_off", ""))

    @property
    def ranked_source(self) -> str:
        """`source` of an answer the version's ranking stage ordered (a small store's: the network's)."""
        network = self.parameters.get("ranker_from")
        return f"ranked:{self.source}" + (f" (ranker of {network})" if network else "")

    @property
    def source(self) -> str:
        """Which model answers, and how the global one was blended in (its share of the neighbours)."""
        own = f"store-model:v{self.version}"
        global_version, share = self.parameters.get("global_version"), self.parameters.get("global_share")
        if global_version is None or share is None:
            return own
        how = self.parameters.get("global_share_chosen_by", "")
        return (
            f"blend:{own}+global-model:v{global_version} (global share {share:g}{', ' + how if how else ''})"
        )

    @classmethod
    def from_arrays(cls, row: ActiveModelRow, arrays: dict[str, Any]) -> ServingModel:
        return cls(
            model_id=row.model_id, version=row.version, parameters=row.parameters,
            products=IdIndex(ids=np.asarray(arrays["product_ids"], dtype=np.int64)),
            neighbours=arrays["neighbours"], similar=arrays["similar"], transitions=arrays["transitions"],
            together=arrays["together"],
            vectors=np.asarray(arrays["vectors"]),  # (mapped, half precision: rows converted when read)
            popularity=np.asarray(arrays["popularity"]),
            category_paths=np.asarray(arrays.get("category_paths", np.zeros(0, dtype=str))),
            content=arrays.get("content"),
            cold=arrays.get("cold"),
            **_cold(arrays),
            compatibility=_compatibility(arrays),
            style=arrays.get("style"),  # (half precision, mapped: converted for the rows a request reads)
            **_ranking_stage(arrays),
        )  # fmt: skip


def _ranking_stage(arrays: dict[str, Any]) -> dict[str, Any]:
    """The version's ranker and its feature arrays, when it has them."""
    if "ranker" not in arrays:
        return {}
    tags = arrays.get("tags")
    features = FeatureSource(
        arrays["similar"], arrays["transitions"], arrays["popularity"], arrays["counts"],
        tags if tags is not None and tags.nnz else None, arrays.get("arrivals"), arrays.get("prices"),
        arrays.get("stats"),
    )  # fmt: skip
    ranker = load_ranker(str(np.asarray(arrays["ranker"])))
    return {"ranker": ranker, "ranker_width": ranker_features(ranker), "features": features}


def _cold(arrays: dict[str, Any]) -> dict[str, Any]:
    """The cold products' arrays, when the version has them (trained with products no shopper touched)."""
    return {name: np.asarray(arrays[name]) for name in COLD_ARRAYS if name in arrays}


def _compatibility(arrays: dict[str, Any]) -> dict[str, list[tuple[str, float, int]]]:
    rules: dict[str, list[tuple[str, float, int]]] = {}
    if "compat_from" not in arrays:  # (versions trained before complete-the-look)
        return rules
    columns = [np.asarray(arrays[f"compat_{name}"]).tolist() for name in ("from", "to", "lift", "support")]
    for source, target, lift, support in zip(*columns, strict=True):
        rules.setdefault(source, []).append((target, float(lift), int(support)))
    return rules


def _file_cache_dir() -> Path:
    return Path(settings.MODEL_CACHE_DIR)


ARRAYS_FILE = "arrays.bin"  # a version's arrays, one after another (64-byte aligned)
INDEX_FILE = "index.json"  # each array's dtype, shape and offset in ARRAYS_FILE
_ALIGN = 64


def _write_arrays(folder: Path, arrays: dict[str, Any]) -> None:
    """The artifact's arrays (CSR parts apart) in one file, with an index, written to a temporary folder
    and renamed into place, so that a reader sees a whole version or none. One file, so that a version is
    one memory map and one open file however many arrays it has (a mapping holds its file open: a `.npy`
    an array ran a worker serving 1,000 stores out of file descriptors)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".writing-"))
    try:
        index: dict[str, dict[str, Any]] = {}
        offset = 0
        with open(staging / ARRAYS_FILE, "wb") as out:
            for name, value in flat_arrays(arrays).items():
                array = np.asarray(value)  # (written in C order; a 0-d array stays 0-d)
                if array.dtype.hasobject:
                    raise ValueError(f"array {name!r} holds Python objects")
                out.write(b"\0" * (-offset % _ALIGN))
                offset += -offset % _ALIGN
                index[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
                out.write(array.tobytes())
                offset += array.nbytes
        (staging / INDEX_FILE).write_text(json.dumps({"size": offset, "arrays": index}))
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not folder.is_dir():
            raise


def _read_arrays(folder: Path) -> dict[str, Any]:
    """The arrays of a version folder, memory-mapped (read-only, shared through the page cache): views of
    one mapping of the version's file, which lives as long as any of them."""
    index = json.loads((folder / INDEX_FILE).read_text())
    size = int(index["size"])
    mapped: mmap.mmap | None = None
    if size:
        with open(folder / ARRAYS_FILE, "rb") as source:
            mapped = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)
        if len(mapped) != size:
            raise ValueError(f"{folder / ARRAYS_FILE} holds {len(mapped)} bytes, not {size}")
    flat: dict[str, np.ndarray] = {}
    for name, entry in index["arrays"].items():
        dtype, shape = np.dtype(entry["dtype"]), tuple(int(n) for n in entry["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0 or mapped is None:
            array = np.zeros(shape, dtype)
            array.flags.writeable = False
        else:
            array = np.frombuffer(mapped, dtype, count, int(entry["offset"])).reshape(shape)
        flat[name] = array
    return arrays_from_flat(flat)


T = TypeVar("T")


class _LruByBytes(Generic[T]):
    """Least recently used entries, evicted when their bytes pass the budget (one entry is kept even when
    it alone is larger)."""

    def __init__(self, max_bytes: int, size_of: Callable[[T], int], kind: str):
        self.max_bytes = max_bytes
        self.size_of = size_of
        self.entries: OrderedDict[Any, T] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()
        self.gauge = SERVING_BYTES.labels(kind)

    def get(self, key: Any) -> T | None:
        with self.lock:
            value = self.entries.get(key)
            if value is not None:
                self.entries.move_to_end(key)
            return value

    def put(self, key: Any, value: T) -> None:
        with self.lock:
            old = self.entries.pop(key, None)
            if old is not None:
                self.bytes -= self.size_of(old)
            self.entries[key] = value
            self.bytes += self.size_of(value)
            while self.bytes > self.max_bytes and len(self.entries) > 1:
                _, evicted = self.entries.popitem(last=False)
                self.bytes -= self.size_of(evicted)
            self.gauge.set(self.bytes)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.bytes = 0
            self.gauge.set(0)


class ModelResidency:
    """Loaded models of this process by model id (a new activation is a new id)."""

    def __init__(self, max_bytes: int):
        self.models: _LruByBytes[ServingModel] = _LruByBytes(max_bytes, lambda model: model.nbytes, "model")
        self.loads = 0  # how many times a model was loaded (tests and the bench read it)
        self._loading = threading.Lock()

    def get(self, row: ActiveModelRow) -> ServingModel | None:
        """The model of `row`, loaded once: from memory, else the local file cache, else the database
        (then written to the file cache). None when its artifact is missing or unreadable."""
        model = self.models.get(row.model_id)
        if model is not None:
            return model
        with self._loading:  # one load at a time: threads asking for the same model wait for it
            model = self.models.get(row.model_id)
            if model is not None:
                return model
            try:
                model = ServingModel.from_arrays(row, self._arrays(row))
            except (ArtifactError, ValueError, KeyError, OSError) as error:
                logger.warning("model %s cannot be served: %s", row.model_id, error)
                return None  # a broken artifact falls back like a missing one
            self.loads += 1
            SERVING_LOADS.labels("model").inc()
            self.models.put(row.model_id, model)
            return model

    def _arrays(self, row: ActiveModelRow) -> dict[str, Any]:
        folder = _file_cache_dir() / row.cache_name
        if folder.is_dir():
            try:
                return _read_arrays(folder)
            except (ValueError, KeyError, OSError):
                shutil.rmtree(folder, ignore_errors=True)  # torn or foreign: fetch it again
        blob = trained_model_artifact(row=row)
        if blob is None:
            raise ArtifactError("no artifact")
        arrays = artifact_load(blob)
        try:
            _write_arrays(folder, arrays)
            return _read_arrays(folder)
        except OSError as error:  # no writable cache: serve from this process's own copy
            logger.warning("model file cache unusable (%s); holding model %s in memory", error, row.model_id)
            return arrays

    def clear(self) -> None:
        self.models.clear()


# --- catalogs -----------------------------------------------------------------------------------
class LoadedCatalog:
    """A store's products (all, or those a request needs) as arrays in internal-id order."""

    def __init__(self, columns: CatalogColumns):
        self.ids = columns.ids
        self.external_ids = columns.external_ids
        self.active = columns.active
        self.in_stock = columns.in_stock
        self.price = columns.price
        brands = {name: code for code, name in enumerate(dict.fromkeys(columns.brands))}
        self.brand_codes = np.fromiter((brands[b] for b in columns.brands), np.int32, len(columns.brands))
        self.brand_index = brands
        self.brand_names = list(brands)
        self.top_category = [path[0] if path else "" for path in columns.category_paths]
        self.category_paths = columns.category_paths  # (complete-the-look reads a product's whole path)
        members: dict[str, list[int]] = {}
        for position, path in enumerate(columns.category_paths):
            for level in set(path):
                members.setdefault(level, []).append(position)
        self.category_members = {level: np.array(items, np.int64) for level, items in members.items()}
        self._by_external: dict[str, int] | None = None
        self.nbytes = (
            self.ids.nbytes * 5
            + sum(len(e) + 50 for e in self.external_ids)
            + sum(v.nbytes for v in self.category_members.values())
            + 64 * len(self.category_paths)
        )

    def __len__(self) -> int:
        return len(self.ids)

    def brands_of(self, position: int) -> str:
        return self.brand_names[self.brand_codes[position]]

    def positions(self, product_ids: np.ndarray) -> np.ndarray:
        """Each internal id's position here; -1 where it is not here."""
        return IdIndex(ids=self.ids).positions(np.asarray(product_ids, dtype=np.int64))

    def in_category(self, category: str, positions: np.ndarray) -> np.ndarray:
        members = self.category_members.get(category)
        if members is None:
            return np.zeros(len(positions), dtype=bool)
        return np.isin(positions, members)

    # the CatalogSource protocol, for a catalog held whole
    def covering(self, product_ids: np.ndarray) -> LoadedCatalog:
        return self

    def internal_ids(self, external_ids: list[str], *, active_only: bool = False) -> dict[str, int]:
        if self._by_external is None:
            self._by_external = {external: index for index, external in enumerate(self.external_ids)}
        out = {}
        for external in external_ids:
            position = self._by_external.get(external)
            if position is not None and (self.active[position] or not active_only):
                out[external] = int(self.ids[position])
        return out


class CatalogSource(Protocol):
    """Where a request reads products: the whole catalog in memory, or SQL for just the ones it needs."""

    def covering(self, product_ids: np.ndarray) -> LoadedCatalog: ...

    def internal_ids(self, external_ids: list[str], *, active_only: bool = False) -> dict[str, int]: ...


class SqlCatalog:
    """Products read from the database for each request (no generation to trust: the cache is off or
    down). The same arrays, so the same filters apply."""

    def __init__(self, store: Store):
        self.store = store

    def covering(self, product_ids: np.ndarray) -> LoadedCatalog:
        ids = sorted({int(pid) for pid in np.asarray(product_ids).tolist()})
        return LoadedCatalog(product_columns(store=self.store, product_ids=ids))

    def internal_ids(self, external_ids: list[str], *, active_only: bool = False) -> dict[str, int]:
        return product_internal_ids(store=self.store, external_ids=external_ids, active_only=active_only)


# --- per store and generation -------------------------------------------------------------------
@dataclass(frozen=True)
class Loaded:
    """What a request serves from: the active model (None: none, or unreadable) and the catalog."""

    model: ServingModel | None
    catalog: CatalogSource


class ServingState:
    def __init__(self) -> None:
        self.residency = ModelResidency(settings.SERVING_MODEL_BYTES)
        self.catalogs: _LruByBytes[tuple[bytes, LoadedCatalog]] = _LruByBytes(
            settings.SERVING_CATALOG_BYTES, lambda entry: entry[1].nbytes, "catalog"
        )
        self.active: OrderedDict[int, tuple[bytes, ActiveModelRow | None]] = OrderedDict()
        self.versions: OrderedDict[tuple[int, int], tuple[bytes, ActiveModelRow | None]] = OrderedDict()
        self.catalog_loads = 0
        self._locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    def _store_lock(self, store_id: int) -> threading.Lock:
        with self._lock:
            lock = self._locks.get(store_id)
            if lock is None:
                if len(self._locks) > 10_000:
                    self._locks.clear()
                lock = self._locks[store_id] = threading.Lock()
            return lock

    def loaded(self, store: Store, generation: bytes | None, version: int | None = None) -> Loaded:
        """The store's model and catalog at `generation` (None: no generation can be trusted, so the
        active model is looked up and products are read with SQL). `version`: that version of the store's
        model instead of the active one (an experiment's variant); the active one if it is gone."""
        if version is not None:
            model = self._version(store, generation, version)
            if model is not None:
                catalog = SqlCatalog(store) if generation is None else self._catalog(store, generation)
                return Loaded(model, catalog)
        if generation is None:
            row = trained_model_active(store=store)
            return Loaded(self.residency.get(row) if row else None, SqlCatalog(store))
        return Loaded(self._model(store, generation), self._catalog(store, generation))

    def _version(self, store: Store, generation: bytes | None, version: int) -> ServingModel | None:
        """A given version, its row looked up once per store generation (every time without one)."""
        key = (store.id, version)
        seen = self.versions.get(key)
        if generation is None or seen is None or seen[0] != generation:
            row = trained_model_version(store_id=store.id, version=version)
            with self._lock:
                self.versions[key] = seen = (generation or b"", row)
                self.versions.move_to_end(key)
                while len(self.versions) > 10_000:
                    self.versions.popitem(last=False)
        return self.residency.get(seen[1]) if seen[1] is not None else None

    def _model(self, store: Store, generation: bytes) -> ServingModel | None:
        seen = self.active.get(store.id)
        if seen is None or seen[0] != generation:
            row = trained_model_active(store=store)
            with self._lock:
                self.active[store.id] = (generation, row)
                self.active.move_to_end(store.id)
                while len(self.active) > 100_000:  # a few ints each: no model is held here
                    self.active.popitem(last=False)
            seen = (generation, row)
        return self.residency.get(seen[1]) if seen[1] is not None else None

    def _catalog(self, store: Store, generation: bytes) -> LoadedCatalog:
        entry = self.catalogs.get(store.id)
        if entry is not None and entry[0] == generation:
            return entry[1]
        with self._store_lock(store.id):
            entry = self.catalogs.get(store.id)
            if entry is not None and entry[0] == generation:
                return entry[1]
            catalog = LoadedCatalog(product_columns(store=store))
            self.catalog_loads += 1
            SERVING_LOADS.labels("catalog").inc()
            self.catalogs.put(store.id, (generation, catalog))
            return catalog

    def clear(self) -> None:
        self.residency.clear()
        self.catalogs.clear()
        with self._lock:
            self.active.clear()
            self.versions.clear()


_state: ServingState | None = None


def serving_state() -> ServingState:
    global _state
    if _state is None:
        _state = ServingState()
    return _state
