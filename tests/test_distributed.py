"""Data-parallel training of the placeholder (and LoRA) on two gloo CPU ranks with the tiny Qwen-Image.

Each rank trains on its own prompt and noise, like a rank of ``accelerate
launch``. With ``zero_prior.distributed`` the vectors must be bit-identical on
both ranks after every step and match one process that steps on the mean of
both ranks' losses; without it, the ranks must drift apart.

The two ranks are spawned once per module; the functions they run live at
module level so that ``spawn`` can import them.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
import tinytrain
import torch
import torch.multiprocessing as mp
from torch import distributed as dist

from zero_prior.placeholder.config import PlaceholderConfig
from zero_prior.placeholder.prepare import add_placeholders
from zero_prior.training.distributed import any_rank, average_gradients, broadcast_from_main

WORLD_SIZE = 2
STEPS = 3
# Different data per rank: its own prompt and its own noise/timestep stream.
PROMPTS = ("a photo of <zwx>, smiling", "<zwx> riding a red bicycle in the rain")
NOISE_SEED = 1000
SCENARIOS = {
    # Rank 1 starts from another LoRA draw and shifted vectors; the broadcast must undo both.
    "synced": dict(accumulation=1, sync=True, skew_start=True),
    "accumulated": dict(accumulation=2, sync=True, skew_start=False),
    "unsynced": dict(accumulation=1, sync=False, skew_start=False),
}
SPAWN_TIMEOUT_S = 180


def run_scenario(pipeline_dir: Path, ranks: Sequence[int], accumulation: int, sync: bool, skew_start: bool) -> dict:
    """Train STEPS AdamW steps on the mean loss of ``ranks``' data; return the vectors and LoRA as they went.

    A spawned rank passes ``[rank]`` (and averages over the process group when
    ``sync``); the single-process reference passes every rank, so its
    gradient is the mean over ranks by construction.
    """
    skewed = skew_start and ranks[0] != 0
    torch.manual_seed(1 if skewed else 0)  # peft's LoRA init draws from the global generator
    pipe = tinytrain.load_pipe(pipeline_dir)
    lora = tinytrain.add_lora(pipe)
    [placeholder] = add_placeholders(pipe.text_encoder, pipe.tokenizer, [PlaceholderConfig()])
    vectors = placeholder.vectors
    if skewed:
        with torch.no_grad():
            vectors.add_(1.0)
    trained = [*lora, vectors]
    optimizer = torch.optim.AdamW(
        [{"params": lora, "weight_decay": 0.01}, {"params": [vectors], "weight_decay": 0.0}], lr=1e-3
    )
    generators = [torch.Generator().manual_seed(NOISE_SEED + rank) for rank in ranks]
    if sync:
        broadcast_from_main(trained)
    record = {"start": vectors.detach().clone(), "steps": []}
    for _ in range(STEPS):
        optimizer.zero_grad()
        for _ in range(accumulation):
            losses = [tinytrain.flow_loss(pipe, PROMPTS[rank], g) for rank, g in zip(ranks, generators)]
            (sum(losses) / len(losses)).backward()
            if sync:
                average_gradients(trained)
        optimizer.step()
        record["steps"].append(vectors.detach().clone())
    record["lora"] = [p.detach().clone() for p in lora]
    return record


def average_partial_gradients(rank: int) -> dict[str, torch.Tensor | None]:
    """Tensors with a gradient on one rank only, on no rank, and in a second dtype (its own all-reduce)."""
    only_rank1 = torch.nn.Parameter(torch.zeros(3))
    nowhere = torch.nn.Parameter(torch.zeros(2))
    half = torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))
    half.grad = torch.full((2,), float(rank + 1), dtype=torch.bfloat16)
    if rank == 1:
        only_rank1.grad = torch.full((3,), 4.0)
    average_gradients([only_rank1, nowhere, half])
    # Buckets of one tensor each (8 bytes): the same means as one bucket.
    small = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    for index, tensor in enumerate(small):
        tensor.grad = torch.full((2,), float(rank * 10 + index))
    average_gradients(small, bucket_bytes=8)
    return {"only_rank1": only_rank1.grad, "nowhere": nowhere.grad, "half": half.grad,
            "small": [t.grad for t in small], "any_rank": (any_rank(rank == 1), any_rank(False))}


def rank_main(rank: int, port: int, pipeline_dir: str, out_dir: str) -> None:
    """One spawned rank: join the gloo group (as ``accelerate launch`` would) and run every scenario."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
    if sys.platform == "linux":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback, whatever the hostname resolves to
    torch.set_num_threads(1)  # two ranks on two cores
    dist.init_process_group("gloo", timeout=timedelta(seconds=SPAWN_TIMEOUT_S))
    try:
        results = {name: run_scenario(Path(pipeline_dir), [rank], **kwargs) for name, kwargs in SCENARIOS.items()}
        results["partial"] = average_partial_gradients(rank)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tiny_pipeline_dir, tmp_path_factory) -> list[dict]:
    """Both ranks' records, per scenario."""
    out_dir = tmp_path_factory.mktemp("ranks")
    context = mp.start_processes(
        rank_main,
        args=(_free_port(), str(tiny_pipeline_dir), str(out_dir)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not context.join(timeout=5):  # re-raises a rank's exception with its traceback
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the two ranks did not finish within {SPAWN_TIMEOUT_S} s")
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def reference(tiny_pipeline_dir):
    """One process stepping on the mean of both ranks' losses, per scenario (computed on first use)."""
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = run_scenario(tiny_pipeline_dir, range(WORLD_SIZE), **SCENARIOS[name])
        return cache[name]

    return get


def test_single_process_leaves_everything_unchanged():
    vector = torch.nn.Parameter(torch.arange(4.0))
    vector.grad = torch.full((4,), 2.0)
    untouched = torch.nn.Parameter(torch.ones(3))
    average_gradients([vector, untouched])
    broadcast_from_main([vector, untouched])
    assert any_rank(True) and not any_rank(False)
    assert torch.equal(vector.grad, torch.full((4,), 2.0)) and untouched.grad is None
    assert torch.equal(vector.detach(), torch.arange(4.0))


@pytest.mark.slow  # two spawned ranks train the tiny model (about 15 s)
def test_a_rank_without_a_gradient_takes_part_with_zeros(ranks):
    for rank in ranks:
        grads = rank["partial"]
        assert torch.equal(grads["only_rank1"], torch.full((3,), 2.0))  # (0 + 4) / 2 on both ranks
        assert grads["nowhere"] is None  # no rank had one: the optimizer still skips it
        assert torch.equal(grads["half"], torch.full((2,), 1.5, dtype=torch.bfloat16))
        assert [g.tolist() for g in grads["small"]] == [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]]  # (i + 10 + i) / 2


@pytest.mark.slow  # two spawned ranks train the tiny model (about 15 s)
def test_ranks_agree_when_any_of_them_failed(ranks):
    assert [rank["partial"]["any_rank"] for rank in ranks] == [(True, False), (True, False)]


@pytest.mark.slow  # two spawned ranks train the tiny model (about 15 s)
def test_every_rank_starts_from_the_main_ranks_vectors(ranks, reference):
    rank0, rank1 = (r["synced"] for r in ranks)
    assert torch.equal(rank0["start"], rank1["start"])
    assert torch.equal(rank0["start"], reference("synced")["start"])


@pytest.mark.slow  # two spawned ranks train the tiny model (about 15 s)
@pytest.mark.parametrize("scenario", ["synced", "accumulated"])
def test_vectors_identical_on_every_rank_after_every_step(ranks, scenario):
    rank0, rank1 = (r[scenario] for r in ranks)
    for step, (a, b) in enumerate(zip(rank0["steps"], rank1["steps"]), start=1):
        assert torch.equal(a, b), f"step {step}: max difference {(a - b).abs().max().item():.3g}"
    assert all(torch.equal(a, b) for a, b in zip(rank0["lora"], rank1["lora"]))


@pytest.mark.slow  # two spawned ranks train the tiny model (about 15 s)
@pytest.mark.parametrize("scenario", ["synced", "accumulated"])
def test_ranks_step_like_one_process_on_the_mean_loss(ranks, reference, scenario):
    expected = reference(scenario)
    got = ranks[0][scenario]
    assert not torch.allclose(got["steps"][-1], got["start"], rtol=0, atol=1e-4), "the vectors did not train"
    for step, (a, b) in enumerate(zip(got["steps"], expected["steps"]), start=1):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=lambda m, step=step: f"step {step}: {m}")
    for a, b in zip(got["lora"], expected["lora"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # two spawned ranks train the tiny model (about 15 s)
def test_without_averaging_the_ranks_diverge(ranks):
    rank0, rank1 = (r["unsynced"] for r in ranks)
    assert torch.equal(rank0["start"], rank1["start"])  # seeded init: they differ only by their data
    for a, b in zip(rank0["steps"], rank1["steps"]):
        assert (a - b).abs().max() > 1e-5
