"""Cosine top-K of clip embeddings against a vocabulary, in bounded memory.

The vocabulary's text embeddings live in a ``.npy`` file (memory-mapped, computed block by block and cached per
``(model, vocabulary)``); scoring walks it block by block: ``S = Q E_b^T`` (``[N, M_b]``, one BLAS/cuBLAS matmul per
query chunk), a per-block ``topk``, then a merge into the running ``[N, K]`` best list. Peak memory is
``O(query_block * entry_block + N * K)``, whatever the vocabulary's size, so millions of entries work.
Embeddings are L2-normalised, so the inner product is the cosine similarity (CLAP score).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from n2m.storage import Store, is_remote, read_bytes

ENTRY_BLOCK = 32_768
QUERY_BLOCK = 1_024


class TopK:
    """The running best ``k`` (score, entry index) per query: ``ids`` int64 ``[N, k]``, ``scores`` float32 ``[N, k]``.

    Rows are sorted by score, descending; ties go to the lower entry index (deterministic whatever the block order).
    Unfilled slots hold index -1 and score -inf.
    """

    def __init__(self, n: int, k: int):
        self.k = k
        self.ids = np.full((n, k), -1, np.int64)
        self.scores = np.full((n, k), -np.inf, np.float32)

    def merge(self, rows: slice, ids: np.ndarray, scores: np.ndarray) -> None:
        """Merge candidates ``[n, c]`` (ids, scores) into rows ``rows`` of the running lists."""
        all_ids = np.concatenate([self.ids[rows], ids], axis=1)
        all_scores = np.concatenate([self.scores[rows], scores], axis=1)
        order = np.lexsort((all_ids, -all_scores), axis=-1)[:, : self.k]
        self.ids[rows] = np.take_along_axis(all_ids, order, axis=1)
        self.scores[rows] = np.take_along_axis(all_scores, order, axis=1)


def stream_topk(
    queries: np.ndarray,
    blocks: Iterable[np.ndarray],
    k: int,
    device: str = "cpu",
    query_block: int = QUERY_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of ``queries`` ``[N, D]`` against entry ``blocks`` (each ``[M_b, D]``, in order).

    Returns ``(ids int64 [N, k'], scores float32 [N, k'])`` with ``k' = min(k, M)``, entry ids counted across blocks.
    Each block is read once, so ``blocks`` may be a generator (a memory map, a file reader).
    """
    dev = torch.device(device)
    n = queries.shape[0]
    result = TopK(n, k)
    q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(dev)
    # Preallocated score/top-k buffers: the allocator never sees a new [n_q, M_b] request, so memory stays flat over
    # millions of entries (fresh allocations per block let glibc's heap grow with the vocabulary).
    buffers = _Buffers(dev)
    offset = 0
    for block in blocks:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if not block.flags.writeable:  # a read-only memory map: torch wants writable memory
            block = block.copy()
        entries = torch.from_numpy(block).to(dev)  # [M_b, D]
        m = entries.shape[0]
        kk = min(k, m)
        for start in range(0, n, query_block):
            q = q_all[start:start + query_block]
            scores = buffers.view("scores", (q.shape[0], m), torch.float32)
            torch.mm(q, entries.T, out=scores)  # [n_q, M_b]
            best = buffers.view("best", (q.shape[0], kk), torch.float32)
            idx = buffers.view("idx", (q.shape[0], kk), torch.int64)
            torch.topk(scores, kk, dim=1, out=(best, idx))  # sorted
            result.merge(slice(start, start + q.shape[0]), idx.cpu().numpy() + offset, best.cpu().numpy())
        offset += m
    width = min(k, offset)
    return result.ids[:, :width], result.scores[:, :width]


class _Buffers:
    """Flat scratch tensors reused as contiguous views of any shape up to the largest seen."""

    def __init__(self, device: torch.device):
        self.device = device
        self.flat: dict[str, torch.Tensor] = {}

    def view(self, name: str, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        size = shape[0] * shape[1]
        flat = self.flat.get(name)
        if flat is None or flat.numel() < size:
            flat = self.flat[name] = torch.empty(size, dtype=dtype, device=self.device)
        return flat[:size].view(shape)


def memmap_blocks(matrix: np.ndarray, block: int = ENTRY_BLOCK) -> Iterator[np.ndarray]:
    """Row blocks ``[<=block, D]`` of a (memory-mapped) matrix."""
    for start in range(0, matrix.shape[0], block):
        yield matrix[start:start + block]


def text_embedding_cache(
    path: str | os.PathLike,
    texts: Callable[[int, int], list[str]],
    count: int,
    embed: Callable[[list[str]], np.ndarray],
    dim: int,
    block: int = 4_096,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The ``[count, dim]`` float32 text embeddings of a vocabulary, from the ``.npy`` file ``path`` (:func:`load_npy`).

    Computed block by block (``texts(start, stop)`` gives the block's strings) and streamed after the ``.npy`` header
    through :meth:`n2m.storage.Store.atomic_writer`, so a killed run never leaves a half-written cache behind (local
    path or fsspec URI); an existing ``path`` of the right shape is reused as is (its name carries the model and
    vocabulary hashes).
    """
    path = str(path)
    store = Store(path)
    if store.exists(path):
        cached = load_npy(path)
        if cached.shape == (count, dim):
            return cached
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (count, dim)}
    with store.atomic_writer(path) as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for start in range(0, count, block):
            stop = min(count, start + block)
            rows = np.asarray(embed(texts(start, stop)), dtype=np.float32)  # [stop - start, dim]
            if rows.shape != (stop - start, dim):
                raise ValueError(f"text embeddings of entries {start}:{stop} have shape {rows.shape}, "
                                 f"expected {(stop - start, dim)}")
            handle.write(np.ascontiguousarray(rows).tobytes())
            if progress is not None:
                progress(stop - start)
    return load_npy(path)


def load_npy(path: str) -> np.ndarray:
    """A ``.npy`` array: memory-mapped from a local file, read whole from an fsspec URI."""
    if is_remote(path):
        return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
    return np.load(path, mmap_mode="r")
