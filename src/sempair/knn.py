"""Exact top-k inner-product search, for mining cross-modal neighbours (DESIGN §1, EPG).

Every epoch each training clip's video embedding is matched against all audio embeddings of the
training set, and vice versa. At N = 1M clips the full score matrix would be 4 TB, so neither
backend materialises it: memory is O(N·k) for the answer plus O(block²) of scratch.

Rows with fewer than k valid keys (M < k, or too many keys excluded by group) are padded with
index -1 and score -inf, so callers can always rely on [N, k] shapes.
"""

from __future__ import annotations

import numpy as np
import torch


def topk_inner_product(queries, keys, k: int, *, backend: str = "auto", block: int = 4096,
                       query_groups=None, key_groups=None) -> tuple[torch.Tensor, torch.Tensor]:
    """queries [N, d], keys [M, d] (float torch tensors or numpy arrays)
    -> (scores [N, k] float32, indices [N, k] int64), each row sorted by descending score.

    query_groups [N] / key_groups [M] (integer, both or neither): a key whose group equals the
    query's group is never returned (mine only across recordings). backend: "torch" (blockwise
    matmul), "faiss" (IndexFlatIP) or "auto" (faiss if importable); both are exact.
    """
    q, kx = _as_matrix(queries, "queries"), _as_matrix(keys, "keys")
    if q.shape[1] != kx.shape[1]:
        raise ValueError(f"queries have d={q.shape[1]} but keys have d={kx.shape[1]}; "
                         "embed both modalities into the same space")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if (query_groups is None) != (key_groups is None):
        raise ValueError("pass both query_groups and key_groups, or neither")
    if query_groups is not None:
        query_groups = _as_groups(query_groups, q.shape[0], "query_groups")
        key_groups = _as_groups(key_groups, kx.shape[0], "key_groups")
    if backend == "auto":
        try:
            import faiss  # noqa: F401
            backend = "faiss"
        except ImportError:
            backend = "torch"
    if backend == "torch":
        return _topk_torch(q, kx.to(q.device), k, block, query_groups, key_groups)
    if backend == "faiss":
        scores, indices = _topk_faiss(q, kx, k, block, query_groups, key_groups)
        return scores.to(q.device), indices.to(q.device)
    raise ValueError(f"unknown backend {backend!r}; use 'auto', 'torch' or 'faiss'")


def _as_matrix(x, name: str) -> torch.Tensor:
    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}; cast with .float()")
    if x.ndim != 2:
        raise ValueError(f"{name} must be [n, d], got shape {tuple(x.shape)}")
    return x.float().contiguous()


def _as_groups(g, n: int, name: str) -> torch.Tensor:
    g = g if isinstance(g, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(g))
    if g.is_floating_point() or g.is_complex() or g.dtype == torch.bool:
        raise TypeError(f"{name} must be integer ids, got {g.dtype}; cast with .long()")
    if g.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match its embeddings, "
                         f"got {tuple(g.shape)}")
    return g.long()


def _topk_torch(q, keys, k, block, qg, kg):
    N, M, dev = q.shape[0], keys.shape[0], q.device
    scores = torch.full((N, k), -torch.inf, device=dev)
    indices = torch.full((N, k), -1, dtype=torch.long, device=dev)
    if qg is not None:
        qg, kg = qg.to(dev), kg.to(dev)
    buf = torch.empty(min(N, block) * min(M, block), device=dev)  # reused: a fresh 64 MB
    for i in range(0, N, block):                                  # tensor per block page-faults
        qb, best_s, best_i = q[i:i + block], scores[i:i + block], indices[i:i + block]
        for j in range(0, M, block):
            kb = keys[j:j + block]                                     # [c, d]
            s = torch.mm(qb, kb.T, out=buf[:len(qb) * len(kb)].view(len(qb), len(kb)))  # [b, c]
            if qg is not None and _may_share(qg[i:i + block], kg[j:j + block]):
                s.masked_fill_(qg[i:i + block, None] == kg[None, j:j + block], -torch.inf)
            s, idx = s.topk(min(k, len(kb)), dim=1)                    # [b, <=k]
            s, pos = torch.cat([best_s, s], 1).topk(k, dim=1)          # merge: [b, k]
            best_i.copy_(torch.cat([best_i, idx + j], 1).gather(1, pos))
            best_s.copy_(s)
    indices[scores == -torch.inf] = -1  # masked or missing keys that got carried along
    return scores, indices


def _may_share(a: torch.Tensor, b: torch.Tensor) -> bool:
    """False when two blocks of group ids cannot overlap. Clips are stored recording by
    recording, so most blocks skip the [b, c] mask entirely; unsorted ids just mask always."""
    return bool(a.min() <= b.max()) and bool(b.min() <= a.max())


def _topk_faiss(q, keys, k, block, qg, kg):
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    N, M = q.shape[0], keys.shape[0]
    scores = np.full((N, k), -np.inf, dtype=np.float32)
    indices = np.full((N, k), -1, dtype=np.int64)
    if N == 0 or M == 0:
        return torch.from_numpy(scores), torch.from_numpy(indices)
    q = q.detach().cpu().numpy()
    index = faiss.IndexFlatIP(q.shape[1])  # holds its own copy of keys: M·d floats
    index.add(keys.detach().cpu().numpy())
    if qg is None:  # faiss scans in 4096 × 1024 tiles: O(1) scratch
        kk = min(k, M)
        scores[:, :kk], indices[:, :kk] = index.search(q, kk)
        return torch.from_numpy(scores), torch.from_numpy(indices)
    # Group exclusion: over-fetch, then drop same-group keys. A query can lose at most as many
    # keys as its own group holds, so fetching k' = k + |own group among keys| is exact in one
    # pass. But k' is a whole recording (thousands of clips), and faiss is slow for large k'.
    # So pass 1 fetches only 4k per row; rows left with < k valid keys get their exact k' in
    # pass 2 (at most two scans, unlike doubling k' until done). Rows are sorted by k' and
    # searched in chunks of <= block rows and <= block² results, so memory stays bounded.
    qg, kg = qg.cpu().numpy(), kg.cpu().numpy()
    groups, counts = np.unique(kg, return_counts=True)
    at = np.clip(np.searchsorted(groups, qg), 0, len(groups) - 1)
    own = np.where(groups[at] == qg, counts[at], 0)                   # [N] same-group keys
    need = np.minimum(k + own, M)                                      # [N] exact k' per row
    left = np.arange(N)
    for fetch in (np.minimum(need, 4 * k), need):
        order, left, start = left[np.argsort(fetch[left], kind="stable")], [], 0
        while start < len(order):
            kk = int(fetch[order[min(start + block, len(order)) - 1]])  # largest k' of block rows
            rows = order[start:start + max(1, min(block, block * block // kk))]
            kk = int(fetch[rows[-1]])                                  # largest k' in chunk
            s, idx = index.search(q[rows], kk)                         # [r, k'], sorted
            drop = (idx < 0) | (kg[np.maximum(idx, 0)] == qg[rows, None])
            s[drop] = -np.inf
            pos = np.argsort(drop, axis=1, kind="stable")[:, :k]       # valid first, in order
            n = pos.shape[1]
            scores[rows, :n] = np.take_along_axis(s, pos, 1)
            indices[rows, :n] = np.where(scores[rows, :n] == -np.inf, -1,
                                         np.take_along_axis(idx, pos, 1))
            left.append(rows[((~drop).sum(1) < k) & (kk < need[rows])])  # not yet exact
            start += len(rows)
        left = np.concatenate([order[:0], *left])                      # rows for pass 2
    return torch.from_numpy(scores), torch.from_numpy(indices)
