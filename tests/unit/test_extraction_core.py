"""Pure extraction code: streaming top-K, running statistics, records, layer specs and tables."""

import numpy as np
import pytest
import torch

from neuronatlas.core.layers import parse_layers
from neuronatlas.core.records import (
    RANDOM_SPLITS,
    TOP_SPLITS,
    KindRecords,
    first_k_not_in,
    layer_records,
    random_pool,
)
from neuronatlas.core.stats import RunningStats
from neuronatlas.core.topk import RunningTopK
from neuronatlas.datasets.activations import RECORDS_SCHEMA, STATS_SCHEMA, records_table, run_id, stats_table

UNEVEN_BATCHES = (7, 1, 13, 2, 9, 1, 5, 12)  # sums to 50


def distinct_activations(n: int, window: int, d: int, seed: int) -> torch.Tensor:
    """(N, T, D) float32 values, all distinct (a shuffled grid, centred on zero)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n * window * d, generator=generator)
    return ((order.float() - n * window * d / 2) / 8).reshape(n, window, d)


def batches(n: int, sizes: tuple[int, ...] = UNEVEN_BATCHES) -> list[torch.Tensor]:
    """Consecutive excerpt indices 0..n-1 cut into batches of the given (uneven) sizes."""
    assert sum(sizes) == n
    return list(torch.arange(n).split(list(sizes)))


def stream_topk(acts: torch.Tensor, k: int, largest: bool, order: list[torch.Tensor]) -> RunningTopK:
    """Feed `acts` (N, T, D) batch by batch, each batch being the excerpt indices in `order`."""
    _, window, d = acts.shape
    topk = RunningTopK(d, k, window, largest=largest)
    for excerpts in order:
        batch = acts[excerpts]  # (B, T, D)
        scores = batch.amax(dim=1) if largest else batch.amin(dim=1)
        topk.update(scores, batch, excerpts)
    return topk


# --- RunningTopK -------------------------------------------------------------------------------


@pytest.mark.parametrize("largest", [True, False])
def test_topk_matches_brute_force_over_uneven_batches(largest: bool) -> None:
    acts = distinct_activations(50, 6, 9, seed=0)
    k = 5
    topk = stream_topk(acts, k, largest, batches(50))

    scores = acts.amax(dim=1) if largest else acts.amin(dim=1)  # (N, D)
    expected = scores.topk(k, dim=0, largest=largest, sorted=True)  # (K, D)
    assert torch.equal(topk.indices, expected.indices.T)
    assert torch.equal(topk.values, expected.values.T)
    # best first, strictly (values are distinct)
    ordered = topk.values[:, :-1] > topk.values[:, 1:] if largest else topk.values[:, :-1] < topk.values[:, 1:]
    assert bool(ordered.all())
    for neuron in range(acts.shape[2]):
        for slot in range(k):
            excerpt = int(topk.indices[neuron, slot])
            assert torch.equal(topk.activations[neuron, slot], acts[excerpt, :, neuron])


def test_topk_one_batch_at_a_time_and_all_at_once_agree() -> None:
    acts = distinct_activations(20, 4, 3, seed=1)
    one_by_one = stream_topk(acts, 6, True, batches(20, (1,) * 20))
    all_at_once = stream_topk(acts, 6, True, batches(20, (20,)))
    assert torch.equal(one_by_one.indices, all_at_once.indices)
    assert torch.equal(one_by_one.values, all_at_once.values)
    assert torch.equal(one_by_one.activations, all_at_once.activations)


def test_topk_hand_computed_tiny_case() -> None:
    # excerpt e: tokens (T=2) x neurons (D=2)
    acts = torch.tensor(
        [
            [[1.0, -2.0], [3.0, 0.0]],  # e0: neuron 0 tokens (1, 3), neuron 1 tokens (-2, 0)
            [[5.0, 4.0], [2.0, 1.0]],  # e1: neuron 0 (5, 2), neuron 1 (4, 1)
            [[0.0, 2.0], [-1.0, 6.0]],  # e2: neuron 0 (0, -1), neuron 1 (2, 6)
        ]
    )
    # corpus positions 10, 11, 12, fed as two batches
    order = [torch.tensor([0, 1]), torch.tensor([2])]
    top = RunningTopK(2, 2, 2, largest=True)
    bottom = RunningTopK(2, 2, 2, largest=False)
    for excerpts in order:
        batch = acts[excerpts]
        top.update(batch.amax(dim=1), batch, excerpts + 10)
        bottom.update(batch.amin(dim=1), batch, excerpts + 10)

    # maxima: neuron 0 -> e0 3, e1 5, e2 0; neuron 1 -> e0 0, e1 4, e2 6
    assert top.values.tolist() == [[5.0, 3.0], [6.0, 4.0]]
    assert top.indices.tolist() == [[11, 10], [12, 11]]
    assert top.activations.tolist() == [[[5.0, 2.0], [1.0, 3.0]], [[2.0, 6.0], [4.0, 1.0]]]
    # minima: neuron 0 -> e0 1, e1 2, e2 -1; neuron 1 -> e0 -2, e1 1, e2 2
    assert bottom.values.tolist() == [[-1.0, 1.0], [-2.0, 1.0]]
    assert bottom.indices.tolist() == [[12, 10], [10, 11]]
    assert bottom.activations.tolist() == [[[0.0, -1.0], [1.0, 3.0]], [[-2.0, 0.0], [4.0, 1.0]]]


@pytest.mark.parametrize(("largest", "fill"), [(True, float("-inf")), (False, float("inf"))])
def test_topk_with_fewer_excerpts_than_k_leaves_empty_slots(largest: bool, fill: float) -> None:
    acts = distinct_activations(3, 4, 2, seed=2)
    topk = stream_topk(acts, 5, largest, batches(3, (2, 1)))

    scores = acts.amax(dim=1) if largest else acts.amin(dim=1)  # (3, D)
    expected = scores.topk(3, dim=0, largest=largest, sorted=True)
    assert torch.equal(topk.indices[:, :3], expected.indices.T)
    assert torch.equal(topk.values[:, :3], expected.values.T)
    assert topk.indices[:, 3:].tolist() == [[-1, -1], [-1, -1]]
    assert topk.values[:, 3:].tolist() == [[fill, fill], [fill, fill]]
    assert torch.equal(topk.activations[:, 3:], torch.zeros(2, 2, 4))


@pytest.mark.parametrize("largest", [True, False])
def test_topk_result_does_not_depend_on_batch_order(largest: bool) -> None:
    acts = distinct_activations(50, 5, 7, seed=3)
    in_order = stream_topk(acts, 8, largest, batches(50))
    shuffled = torch.randperm(50, generator=torch.Generator().manual_seed(4))
    reordered = stream_topk(acts, 8, largest, list(shuffled.split(list(reversed(UNEVEN_BATCHES)))))
    # distinct values: the same set, hence the same sorted lists
    assert torch.equal(in_order.indices, reordered.indices)
    assert torch.equal(in_order.values, reordered.values)
    assert torch.equal(in_order.activations, reordered.activations)


# --- RunningStats ------------------------------------------------------------------------------


def stream_stats(acts: torch.Tensor, sizes: tuple[int, ...]) -> RunningStats:
    stats = RunningStats(acts.shape[2])
    for chunk in acts.split(list(sizes)):
        stats.update(chunk)
    return stats


def test_stats_hand_computed() -> None:
    # one neuron, six tokens: 1, 2, 3 | -2, 0, 2
    acts = torch.tensor([[[1.0], [2.0], [3.0]], [[-2.0], [0.0], [2.0]]])  # (2, 3, 1)
    result = stream_stats(acts, (1, 1)).result()
    assert result.mean.tolist() == [1.0]  # 6 / 6
    assert result.variance.tolist() == pytest.approx([16 / 6], rel=1e-12)  # (0 + 1 + 4 + 9 + 1 + 1) / 6
    assert result.max.tolist() == [3.0]
    assert result.min.tolist() == [-2.0]
    assert result.frac_positive.tolist() == pytest.approx([4 / 6], rel=1e-12)  # 0 is not positive
    assert result.n_tokens == 6


def test_stats_match_numpy_over_uneven_batches() -> None:
    generator = torch.Generator().manual_seed(5)
    acts = torch.randn(50, 6, 4, generator=generator)
    acts[3, 2, :] = 0.0  # zeros count as not positive
    result = stream_stats(acts, UNEVEN_BATCHES).result()

    flat = acts.reshape(-1, 4).double().numpy()  # (N*T, D)
    # float32 input: moments within a batch are float32 sums (merged in float64), accurate to
    # about float32's resolution of the values (~1e-7 of their scale, here 1)
    np.testing.assert_allclose(result.mean.numpy(), flat.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.variance.numpy(), flat.var(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(result.max.double().numpy(), flat.max(axis=0))
    np.testing.assert_array_equal(result.min.double().numpy(), flat.min(axis=0))
    np.testing.assert_array_equal(result.frac_positive.numpy(), (flat > 0).mean(axis=0))
    assert result.n_tokens == 300
    assert result.mean.dtype == torch.float64
    assert result.variance.dtype == torch.float64


def test_stats_merge_is_stable_with_a_large_offset() -> None:
    # values about 1e4 with a spread of 1e-3: E[x^2] - E[x]^2 would lose about 1e-2 of the variance
    generator = torch.Generator().manual_seed(6)
    acts = 1e4 + 1e-3 * torch.randn(50, 8, 3, generator=generator, dtype=torch.float64)
    result = stream_stats(acts, UNEVEN_BATCHES).result()

    flat = acts.reshape(-1, 3).numpy()
    np.testing.assert_allclose(result.variance.numpy(), flat.var(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result.mean.numpy(), flat.mean(axis=0), rtol=1e-12)
    assert result.n_tokens == 400


def test_stats_stay_accurate_when_later_batches_drift_away_from_the_first() -> None:
    # the shift is the first batch's mean (about 0); the rest sit near 50 with a spread of 1
    generator = torch.Generator().manual_seed(7)
    acts = torch.randn(64, 16, 3, generator=generator)
    acts[4:] += 50.0
    result = stream_stats(acts, (4, 20, 40)).result()

    flat = acts.reshape(-1, 3).double().numpy()
    np.testing.assert_allclose(result.variance.numpy(), flat.var(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result.mean.numpy(), flat.mean(axis=0), rtol=1e-6)


def test_stats_without_data_raise() -> None:
    with pytest.raises(ValueError, match="no activations were added"):
        RunningStats(3).result()


# --- records -----------------------------------------------------------------------------------

# A hand-built layer: D=2 neurons, K=2, T=2, bottom candidates C=4, random pool P=6.
TOP_INDICES = torch.tensor([[4, 7], [2, 5]])
BOTTOM_INDICES = torch.tensor([[7, 1, 3, 9], [0, 5, 2, 6]])
POOL = np.array([9, 3, 6, 8, 0, 4])
TOP_ACTS = torch.arange(2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2)  # (D, K, T)
BOTTOM_ACTS = -1.0 - torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)  # (D, C, T)
POOL_ACTS = 100.0 + torch.arange(6 * 2 * 2, dtype=torch.float32).reshape(6, 2, 2)  # (P, T, D)


def hand_records(
    top_indices: torch.Tensor = TOP_INDICES,
    bottom_indices: torch.Tensor = BOTTOM_INDICES,
    pool: np.ndarray = POOL,
    random_k: int = 3,
) -> dict[str, KindRecords]:
    records = layer_records(top_indices, TOP_ACTS, bottom_indices, BOTTOM_ACTS, pool, POOL_ACTS, 2, random_k)
    assert [r.kind for r in records] == ["top", "bottom", "random"]
    return {r.kind: r for r in records}


def test_layer_records_hand_built() -> None:
    records = hand_records()
    top, bottom, random = records["top"], records["bottom"], records["random"]

    assert top.neuron.tolist() == [0, 0, 1, 1]
    assert top.rank.tolist() == [0, 1, 0, 1]
    assert top.excerpt_index.tolist() == [4, 7, 2, 5]
    assert top.split.tolist() == ["train", "calibration", "train", "calibration"]
    np.testing.assert_array_equal(top.activations, TOP_ACTS.reshape(4, 2).numpy())

    # neuron 0: 7 is one of its top excerpts, so 1 and 3 (9 is left over);
    # neuron 1: 0, then 5 and 2 are its top excerpts, then 6
    assert bottom.neuron.tolist() == [0, 0, 1, 1]
    assert bottom.rank.tolist() == [0, 1, 0, 1]
    assert bottom.excerpt_index.tolist() == [1, 3, 0, 6]
    assert bottom.split.tolist() == ["train", "calibration", "train", "calibration"]
    np.testing.assert_array_equal(
        bottom.activations, np.stack([BOTTOM_ACTS[0, 1], BOTTOM_ACTS[0, 2], BOTTOM_ACTS[1, 0], BOTTOM_ACTS[1, 3]])
    )

    # neuron 0 excludes 4, 7 (top) and 1, 3 (bottom), not 9 (a bottom candidate left over): 9, 6, 8;
    # neuron 1 excludes 2, 5, 0, 6: 9, 3, 8
    assert random.neuron.tolist() == [0, 0, 0, 1, 1, 1]
    assert random.rank.tolist() == [0, 1, 2, 0, 1, 2]
    assert random.excerpt_index.tolist() == [9, 6, 8, 9, 3, 8]
    assert random.split.tolist() == ["calibration", "valid", "test"] * 2
    pool_slots = [(0, 0), (2, 0), (3, 0), (0, 1), (1, 1), (3, 1)]  # (slot in the pool, neuron)
    np.testing.assert_array_equal(random.activations, np.stack([POOL_ACTS[p, :, d] for p, d in pool_slots]))

    assert top.neuron.dtype == np.int32
    assert top.rank.dtype == np.int16


def test_layer_records_return_fewer_rows_when_exclusions_leave_fewer_than_k() -> None:
    top_indices = torch.tensor([[4, -1], [2, 5]])  # neuron 0 kept a single top excerpt
    bottom_indices = torch.tensor([[4, 1, -1, -1], [0, 5, 2, 6]])  # neuron 0: only 1 is usable
    pool = np.array([4, 1, 2, 3, 0, 7])
    records = hand_records(top_indices, bottom_indices, pool, random_k=3)
    top, bottom, random = records["top"], records["bottom"], records["random"]

    assert list(zip(top.neuron.tolist(), top.excerpt_index.tolist(), strict=True)) == [(0, 4), (1, 2), (1, 5)]
    assert top.rank.tolist() == [0, 0, 1]
    assert list(zip(bottom.neuron.tolist(), bottom.excerpt_index.tolist(), strict=True)) == [(0, 1), (1, 0), (1, 6)]
    assert bottom.rank.tolist() == [0, 0, 1]
    # neuron 0 excludes 4 and 1: 2, 3, 0; neuron 1 excludes 2, 5, 0, 6: 4, 1, 3
    assert random.neuron.tolist() == [0, 0, 0, 1, 1, 1]
    assert random.excerpt_index.tolist() == [2, 3, 0, 4, 1, 3]

    short_pool = hand_records(pool=np.array([4, 7, 1, 3, 2]), random_k=3)["random"]
    # neuron 0 excludes 4, 7, 1, 3: only 2; neuron 1 excludes 2: 4, 7, 1
    assert short_pool.neuron.tolist() == [0, 1, 1, 1]
    assert short_pool.rank.tolist() == [0, 0, 1, 2]
    assert short_pool.excerpt_index.tolist() == [2, 4, 7, 1]


def test_first_k_not_in_keeps_the_first_usable_candidates() -> None:
    candidates = torch.tensor([[5, 1, 2, 3], [-1, 4, 4, 0]])
    excluded = torch.tensor([[1, -1], [9, 8]])
    keep = first_k_not_in(candidates, excluded, 2)
    assert keep.tolist() == [[True, False, True, False], [False, True, True, False]]


def pipeline_records(
    acts: torch.Tensor, k: int, random_k: int, seed: int
) -> tuple[list[KindRecords], np.ndarray, RunningTopK, RunningTopK]:
    """What the extraction does: top K, 2K bottom candidates, a shared pool of random_k + 2K."""
    n, window, d = acts.shape
    top = RunningTopK(d, k, window, largest=True)
    bottom = RunningTopK(d, 2 * k, window, largest=False)
    for excerpts in torch.arange(n).split(7):
        batch = acts[excerpts]
        top.update(batch.amax(dim=1), batch, excerpts)
        bottom.update(batch.amin(dim=1), batch, excerpts)
    pool = random_pool(n, random_k + 2 * k, np.random.default_rng(seed))
    pool_acts = acts[torch.as_tensor(pool)]  # (P, T, D)
    records = layer_records(
        top.indices, top.activations, bottom.indices, bottom.activations, pool, pool_acts, k, random_k
    )
    return records, pool, top, bottom


def test_layer_records_on_random_tensors_are_disjoint_and_round_robin() -> None:
    acts = distinct_activations(60, 5, 6, seed=7)
    k, random_k = 9, 7
    records, pool, _, _ = pipeline_records(acts, k, random_k, seed=8)
    by_kind = {r.kind: r for r in records}
    minima = acts.amin(dim=1)  # (N, D)

    for neuron in range(6):
        rows = {kind: r.excerpt_index[r.neuron == neuron].tolist() for kind, r in by_kind.items()}
        assert len(rows["top"]) == k
        assert len(rows["bottom"]) == k
        assert len(rows["random"]) == random_k
        every = rows["top"] + rows["bottom"] + rows["random"]
        assert len(set(every)) == len(every), f"neuron {neuron}: an excerpt is kept twice"

        # brute force: bottom = the k smallest minima outside the top; random = pool order minus both
        by_min = minima[:, neuron].argsort().tolist()
        assert rows["bottom"] == [e for e in by_min if e not in rows["top"]][:k]
        taken = set(rows["top"]) | set(rows["bottom"])
        assert rows["random"] == [e for e in pool.tolist() if e not in taken][:random_k]

        # the splits of one neuron never share an excerpt (delphi's train/test overlap)
        splits: dict[str, set[int]] = {}
        for r in by_kind.values():
            mine = r.neuron == neuron
            for split, excerpt in zip(r.split[mine].tolist(), r.excerpt_index[mine].tolist(), strict=True):
                splits.setdefault(split, set()).add(excerpt)
        names = sorted(splits)
        assert names == ["calibration", "test", "train", "valid"]
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                assert splits[first].isdisjoint(splits[second]), (neuron, first, second)

    for r in by_kind.values():
        splits_of_kind = RANDOM_SPLITS if r.kind == "random" else TOP_SPLITS
        assert r.split.tolist() == [splits_of_kind[rank % len(splits_of_kind)] for rank in r.rank.tolist()]
    assert by_kind["top"].split[by_kind["top"].rank == 4].tolist() == ["train"] * 6
    assert by_kind["top"].split[by_kind["top"].rank == 8].tolist() == ["train"] * 6
    assert by_kind["random"].split[by_kind["random"].rank == 3].tolist() == ["calibration"] * 6
    assert set(by_kind["random"].split.tolist()) == {"calibration", "valid", "test"}


def test_random_pool_is_seeded_without_replacement_and_capped() -> None:
    first = random_pool(100, 20, np.random.default_rng(42))
    again = random_pool(100, 20, np.random.default_rng(42))
    other = random_pool(100, 20, np.random.default_rng(43))
    np.testing.assert_array_equal(first, again)
    assert first.tolist() != other.tolist()
    assert len(first) == 20
    assert len(set(first.tolist())) == 20
    assert all(0 <= e < 100 for e in first.tolist())

    capped = random_pool(5, 20, np.random.default_rng(0))
    assert sorted(capped.tolist()) == [0, 1, 2, 3, 4]


# --- parse_layers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", list(range(12))),
        (" all ", list(range(12))),
        ("5", [5]),
        ("0,5", [0, 5]),
        ("3-7", [3, 4, 5, 6, 7]),
        ("0-2,10", [0, 1, 2, 10]),
        ("5,1,5,0-2", [0, 1, 2, 5]),
        ("4-4", [4]),
        ("0-11", list(range(12))),
    ],
)
def test_parse_layers(spec: str, expected: list[int]) -> None:
    assert parse_layers(spec, 12) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("12", "layer 12 is out of range: the model has layers 0-11"),
        ("3,15", "layer 15 is out of range: the model has layers 0-11"),
        ("10-13", "layer 12 is out of range: the model has layers 0-11"),
        ("3-1", "'3-1' is not a layer, a range like 3-7, or 'all'"),
        ("x", "'x' is not a layer, a range like 3-7, or 'all'"),
        ("", "'' is not a layer, a range like 3-7, or 'all'"),
        ("1,", "'' is not a layer, a range like 3-7, or 'all'"),
        ("-1", "'-1' is not a layer, a range like 3-7, or 'all'"),
    ],
)
def test_parse_layers_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_layers(spec, 12)
    assert str(raised.value) == message


# --- tables ------------------------------------------------------------------------------------


def test_records_table_orders_rows_and_maps_sequence_ids() -> None:
    records = layer_records(TOP_INDICES, TOP_ACTS, BOTTOM_INDICES, BOTTOM_ACTS, POOL, POOL_ACTS, 2, 3)
    sequence_ids = np.arange(10, dtype=np.int64) * 100 + 7  # excerpt e -> 100 e + 7
    table = records_table(records, sequence_ids)

    assert table.schema == RECORDS_SCHEMA
    columns = table.to_pydict()
    assert columns["neuron"] == [0] * 7 + [1] * 7
    assert columns["kind"] == (["top"] * 2 + ["bottom"] * 2 + ["random"] * 3) * 2
    assert columns["rank"] == [0, 1, 0, 1, 0, 1, 2] * 2
    assert columns["split"] == ["train", "calibration", "train", "calibration", "calibration", "valid", "test"] * 2
    excerpts = [4, 7, 1, 3, 9, 6, 8, 2, 5, 0, 6, 9, 3, 8]  # neuron 0, then neuron 1
    assert columns["sequence_id"] == [100 * e + 7 for e in excerpts]
    expected_lists = [
        TOP_ACTS[0, 0],
        TOP_ACTS[0, 1],
        BOTTOM_ACTS[0, 1],
        BOTTOM_ACTS[0, 2],
        POOL_ACTS[0, :, 0],
        POOL_ACTS[2, :, 0],
        POOL_ACTS[3, :, 0],
        TOP_ACTS[1, 0],
        TOP_ACTS[1, 1],
        BOTTOM_ACTS[1, 0],
        BOTTOM_ACTS[1, 3],
        POOL_ACTS[0, :, 1],
        POOL_ACTS[1, :, 1],
        POOL_ACTS[3, :, 1],
    ]
    assert columns["activations"] == [row.tolist() for row in expected_lists]
    assert columns["max_activation"] == [max(row) for row in columns["activations"]]
    assert columns["min_activation"] == [min(row) for row in columns["activations"]]


def test_records_table_from_random_tensors_keeps_extremes_and_order() -> None:
    acts = distinct_activations(40, 5, 4, seed=9)
    records, _, _, _ = pipeline_records(acts, 4, 3, seed=10)
    table = records_table(records, np.arange(40, dtype=np.int64) + 1000)
    columns = table.to_pydict()

    kind_order = {"top": 0, "bottom": 1, "random": 2}
    keys = [(n, kind_order[k], r) for n, k, r in zip(columns["neuron"], columns["kind"], columns["rank"], strict=True)]
    assert keys == sorted(keys)
    assert len(keys) == 4 * (4 + 4 + 3)
    assert columns["max_activation"] == [max(row) for row in columns["activations"]]
    assert columns["min_activation"] == [min(row) for row in columns["activations"]]
    # each row's values are the excerpt's activations for that neuron
    for neuron, sequence_id, values in zip(
        columns["neuron"], columns["sequence_id"], columns["activations"], strict=True
    ):
        assert values == acts[sequence_id - 1000, :, neuron].tolist()


def test_stats_table_counts_records_and_flags_short_neurons() -> None:
    # neuron 0 gets a single random record, neuron 1 all three
    records = layer_records(
        TOP_INDICES, TOP_ACTS, BOTTOM_INDICES, BOTTOM_ACTS, np.array([4, 7, 1, 3, 2]), POOL_ACTS[:5], 2, 3
    )
    stats = RunningStats(2)
    stats.update(torch.tensor([[[1.0, -1.0], [3.0, 0.0]], [[-2.0, 5.0], [2.0, 4.0]]]))
    table = stats_table(stats.result(), records, k=2, random_k=3)

    assert table.schema == STATS_SCHEMA
    columns = table.to_pydict()
    assert columns["neuron"] == [0, 1]
    assert columns["mean"] == [1.0, 2.0]  # (1 + 3 - 2 + 2) / 4, (-1 + 0 + 5 + 4) / 4
    assert columns["variance"] == [3.5, 6.5]  # (0 + 4 + 9 + 1) / 4, (9 + 4 + 9 + 4) / 4
    assert columns["max"] == [3.0, 5.0]
    assert columns["min"] == [-2.0, -1.0]
    assert columns["frac_positive"] == [0.75, 0.5]
    assert columns["n_tokens"] == [4, 4]
    assert columns["n_top"] == [2, 2]
    assert columns["n_bottom"] == [2, 2]
    assert columns["n_random"] == [1, 3]
    assert columns["short_records"] == [True, False]


# --- run_id ------------------------------------------------------------------------------------

PARAMETERS = {"k": 20, "random_k": 15, "window": 64, "seed": 0}


def test_run_id_is_content_addressed() -> None:
    base = run_id("gpt2@abc", "corpus-1", PARAMETERS)
    assert base == run_id("gpt2@abc", "corpus-1", dict(reversed(PARAMETERS.items())))
    assert base.startswith("x-")
    assert len(base) == 14

    changed = {
        run_id("gpt2@abd", "corpus-1", PARAMETERS),
        run_id("gpt2@abc", "corpus-2", PARAMETERS),
        *(run_id("gpt2@abc", "corpus-1", {**PARAMETERS, name: value + 1}) for name, value in PARAMETERS.items()),
        run_id("gpt2@abc", "corpus-1", {**PARAMETERS, "dtype": "bf16"}),
    }
    assert base not in changed
    assert len(changed) == 7
