"""Exact top-k inner-product search: both backends against brute force, groups, padding, memory."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from sempair.knn import topk_inner_product

HAVE_FAISS = importlib.util.find_spec("faiss") is not None
BACKENDS = ["torch", pytest.param("faiss", marks=pytest.mark.skipif(not HAVE_FAISS,
                                                                   reason="faiss not installed"))]


def embeddings(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


def brute_force(q, keys, k, qg=None, kg=None):
    full = q @ keys.T                                                  # [N, M]
    if qg is not None:
        full = full.masked_fill(qg[:, None] == kg[None, :], -torch.inf)
    return full, *full.topk(min(k, keys.shape[0]), dim=1)


def assert_matches(scores, indices, full, expected):
    """Same scores to 1e-5 and, up to ties, the same keys: every returned index really has the
    returned score, and no key appears twice in a row."""
    n = expected.shape[1]
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    torch.testing.assert_close(scores[:, :n], expected, atol=1e-5, rtol=0)
    valid = indices[:, :n] >= 0
    assert torch.equal(valid, expected > -torch.inf)
    got = full.gather(1, indices[:, :n].clamp(min=0))
    torch.testing.assert_close(got[valid], scores[:, :n][valid], atol=1e-5, rtol=0)
    for row, ok in zip(indices[:, :n], valid, strict=True):
        assert len(set(row[ok].tolist())) == int(ok.sum())
    assert (scores[:, :-1] >= scores[:, 1:]).all()                     # sorted descending


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, m, k, block", [
    (50, 70, 5, 16), (257, 1000, 10, 100), (33, 7, 3, 5), (1, 513, 20, 64), (300, 200, 1, 4096),
])
def test_matches_brute_force(backend, n, m, k, block):
    q, keys = embeddings(n, 24, seed=n), embeddings(m, 24, seed=m + 1)
    scores, indices = topk_inner_product(q, keys, k, backend=backend, block=block)
    assert scores.shape == indices.shape == (n, k)
    full, expected, _ = brute_force(q, keys, k)
    assert_matches(scores, indices, full, expected)


def test_backends_agree():
    pytest.importorskip("faiss")
    q, keys = embeddings(400, 32, seed=0), embeddings(900, 32, seed=1)
    s_t, i_t = topk_inner_product(q, keys, 10, backend="torch", block=128)
    s_f, i_f = topk_inner_product(q, keys, 10, backend="faiss", block=128)
    torch.testing.assert_close(s_t, s_f, atol=1e-5, rtol=0)
    assert (i_t == i_f).float().mean() > 0.99  # random data: ties are vanishingly rare


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block", [8, 64, 4096])
@pytest.mark.parametrize("layout", ["shuffled", "by recording"])
def test_group_exclusion(backend, block, layout):
    n, m, k = 120, 500, 10
    q, keys = embeddings(n, 16, seed=2), embeddings(m, 16, seed=3)
    if layout == "shuffled":
        g = torch.Generator().manual_seed(4)
        qg, kg = torch.randint(0, 6, (n,), generator=g), torch.randint(0, 6, (m,), generator=g)
    else:  # clips stored recording by recording: the torch backend skips disjoint blocks
        qg, kg = torch.arange(n) * 6 // n, torch.arange(m) * 6 // m
    kg[:300] = 0                                  # one recording holds most keys: deep over-fetch
    keys[:300] = keys[:300] + q[qg == 0].mean(0)  # ... and they are its queries' nearest keys
    keys = torch.nn.functional.normalize(keys, dim=1)
    scores, indices = topk_inner_product(q, keys, k, backend=backend, block=block,
                                         query_groups=qg, key_groups=kg)
    assert not (kg[indices] == qg[:, None]).any()
    full, expected, _ = brute_force(q, keys, k, qg, kg)
    assert_matches(scores, indices, full, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pads_when_too_few_keys(backend):
    q, keys = embeddings(6, 8, seed=5), embeddings(3, 8, seed=6)
    scores, indices = topk_inner_product(q, keys, 5, backend=backend)
    assert (indices[:, 3:] == -1).all() and (scores[:, 3:] == -torch.inf).all()
    assert (indices[:, :3] >= 0).all() and torch.isfinite(scores[:, :3]).all()
    # group exclusion leaves query 0 (group 1) with 1 valid key and the rest (group 0) with 2
    qg, kg = torch.tensor([1, 0, 0, 0, 0, 0]), torch.tensor([1, 1, 0])
    scores, indices = topk_inner_product(q, keys, 5, backend=backend, query_groups=qg,
                                         key_groups=kg)
    assert indices[0].tolist() == [2, -1, -1, -1, -1]
    assert (indices[1:, 2:] == -1).all() and (indices[1:, :2] >= 0).all()
    assert (scores == -torch.inf).sum() == 4 + 5 * 3
    full, expected, _ = brute_force(q, keys, 5, qg, kg)
    assert_matches(scores, indices, full, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_numpy_and_float64_inputs(backend):
    q, keys = embeddings(20, 8, seed=7), embeddings(30, 8, seed=8)
    scores, indices = topk_inner_product(q.double().numpy(), keys.numpy(), 4, backend=backend)
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    full, expected, _ = brute_force(q, keys, 4)
    assert_matches(scores, indices, full, expected)


def test_auto_and_empty():
    q, keys = embeddings(20, 8, seed=9), embeddings(30, 8, seed=10)
    scores, indices = topk_inner_product(q, keys, 3)
    full, expected, _ = brute_force(q, keys, 3)
    assert_matches(scores, indices, full, expected)
    scores, indices = topk_inner_product(q[:0], keys, 3)
    assert scores.shape == indices.shape == (0, 3)
    scores, indices = topk_inner_product(q, keys[:0], 3, backend="torch")
    assert (indices == -1).all() and (scores == -torch.inf).all()


def test_errors_name_the_fix():
    q, keys = embeddings(4, 8, seed=0), embeddings(5, 8, seed=1)
    with pytest.raises(ValueError, match="same space"):
        topk_inner_product(q, embeddings(5, 6, seed=1), 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        topk_inner_product(q, keys, 0)
    with pytest.raises(ValueError, match="both query_groups and key_groups"):
        topk_inner_product(q, keys, 2, query_groups=torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"\.float\(\)"):
        topk_inner_product(q.long(), keys, 2)
    with pytest.raises(TypeError, match=r"\.long\(\)"):
        topk_inner_product(q, keys, 2, query_groups=torch.zeros(4), key_groups=torch.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        topk_inner_product(q, keys, 2, query_groups=torch.zeros(4, dtype=torch.long),
                           key_groups=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        topk_inner_product(q[0], keys, 2)
    with pytest.raises(ValueError, match="unknown backend"):
        topk_inner_product(q, keys, 2, backend="annoy")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_torch_backend_runs_on_cuda():
    q, keys = embeddings(100, 16, seed=0), embeddings(300, 16, seed=1)
    scores, indices = topk_inner_product(q.cuda(), keys.cuda(), 5, backend="torch", block=64)
    assert scores.is_cuda and indices.is_cuda
    full, expected, _ = brute_force(q, keys, 5)
    assert_matches(scores.cpu(), indices.cpu(), full, expected)


PEAK = """
import json, resource, sys, torch
from sempair.knn import topk_inner_product
torch.manual_seed(0)
q, keys = torch.randn(500, 8), torch.randn(100_000, 8)
for backend in sys.argv[1:]:
    topk_inner_product(q[:10], keys[:2000], 10, backend=backend, block=1024)  # warm up
before, extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, {}
for backend in sys.argv[1:]:  # peak RSS over the same baseline, so each one is bounded
    scores, indices = topk_inner_product(q, keys, 10, backend=backend, block=1024)
    assert (indices >= 0).all()
    extra[backend] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(extra))
"""


def test_memory_stays_blockwise():
    """500 × 100k scores would be 200 MB; the search must stay within O(block²) scratch."""
    backends = ["torch", "faiss"] if HAVE_FAISS else ["torch"]
    out = subprocess.run([sys.executable, "-c", PEAK, *backends], capture_output=True,
                         text=True, check=True)
    extra_mb = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(extra_mb) == set(backends)
    assert all(mb < 50 for mb in extra_mb.values()), extra_mb  # block² floats are 4 MB
