"""Recorded activations equal a direct, hook-free computation of the same quantity, and the kept
excerpts really are the K best over the whole (small) corpus: SmolLM2 (shipped, Llama-style
gated MLP), Gemma 3 (shipped, GeGLU with extra norms) and GPT-2 (randomly initialised)."""

from typing import Any

import numpy as np
import pytest
import torch

from neuronatlas.adapters.extraction import extract, mlp_layout
from neuronatlas.adapters.models import load_model, open_tokenizer, resolve_model
from neuronatlas.adapters.sources import SourceSpec, read_source
from neuronatlas.core.corpus import build_windows
from neuronatlas.core.records import random_pool

K = 5


def windows_for(model_name: str, count: int) -> np.ndarray:
    """`count` 64-token windows of the shipped Wikipedia text, tokenised for `model_name`."""
    tokenizer = open_tokenizer(model_name)
    documents = read_source(SourceSpec("wiki-vital-en")).documents[:count]
    windows, _ = build_windows(documents, tokenizer.encode, tokenizer.token_strings, 64)
    return np.array([w.token_ids for w in windows[:count]], dtype=np.int64)


def direct_activations(model: Any, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """The neuron activations of `layer` (B, T, D), recomputed from the block's parts without
    hooks; checked by rebuilding the block's output from them."""
    with torch.no_grad():
        if hasattr(model, "transformer"):  # GPT-2: GELU output
            body = model.transformer
            states = body(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
            block, h = body.h[layer], states[layer]
            middle = h + block.attn(block.ln_1(h))[0]
            acts = block.mlp.act(block.mlp.c_fc(block.ln_2(middle)))
            rebuilt = middle + block.mlp.c_proj(acts)
        else:  # gated: act(gate_proj(x)) * up_proj(x)
            body = model.model
            states = body(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
            block, h = body.layers[layer], states[layer]
            positions = torch.arange(ids.shape[1]).unsqueeze(0)
            gemma = hasattr(block, "pre_feedforward_layernorm")
            rotary = (h, positions, body.config.layer_types[layer]) if gemma else (h, positions)
            attention = block.self_attn(
                hidden_states=block.input_layernorm(h),
                position_embeddings=body.rotary_emb(*rotary),
                attention_mask=None,
            )[0]
            middle = h + (block.post_attention_layernorm(attention) if gemma else attention)
            x = block.pre_feedforward_layernorm(middle) if gemma else block.post_attention_layernorm(middle)
            acts = block.mlp.act_fn(block.mlp.gate_proj(x)) * block.mlp.up_proj(x)
            down = block.mlp.down_proj(acts)
            rebuilt = middle + (block.post_feedforward_layernorm(down) if gemma else down)
        assert layer + 1 < len(states) - 1, "the last hidden state is normalised: check an inner layer"
        torch.testing.assert_close(rebuilt, states[layer + 1], atol=1e-4, rtol=1e-4)
    return acts


def check_layer(model: Any, token_ids: np.ndarray, layers: list[int], neurons: list[int]) -> None:
    pool = random_pool(len(token_ids), 6, np.random.default_rng(3))
    state = extract(model, token_ids, layers, k=K, bottom_candidates=2 * K, pool=pool, batch_size=7, device="cpu")
    ids = torch.as_tensor(token_ids)
    for layer in layers:
        direct = direct_activations(model, ids, layer)  # (N, T, D)
        accumulator = state[layer]
        for neuron in neurons:
            values = direct[:, :, neuron]  # (N, T)
            top = torch.topk(values.amax(dim=1), K).indices
            bottom = torch.topk(values.amin(dim=1), 2 * K, largest=False).indices
            assert accumulator.top.indices[neuron].tolist() == top.tolist(), (layer, neuron)
            assert accumulator.bottom.indices[neuron].tolist() == bottom.tolist(), (layer, neuron)
            torch.testing.assert_close(accumulator.top.activations[neuron], values[top], atol=1e-5, rtol=0)
            torch.testing.assert_close(accumulator.bottom.activations[neuron], values[bottom], atol=1e-5, rtol=0)
            torch.testing.assert_close(accumulator.pool_activations[:, :, neuron], values[pool], atol=1e-5, rtol=0)
        flat = direct.reshape(-1, direct.shape[-1]).double()
        stats = accumulator.stats.result()
        # fp32 activations, summed in fp32 within a batch: the 1e-5 tolerance for fp32
        torch.testing.assert_close(stats.mean, flat.mean(dim=0), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats.variance, flat.var(dim=0, unbiased=False), atol=1e-5, rtol=1e-5)
        # a value within fp32 noise of 0 may change sign between the batched and the direct pass
        # (each CPU picks its own matmul kernels): those tokens are the tolerance, and no more
        undecided = (flat.abs() < 1e-5).double().mean(dim=0)
        assert ((stats.frac_positive - (flat > 0).double().mean(dim=0)).abs() <= undecided + 1e-12).all()
        assert stats.n_tokens == flat.shape[0]


def test_smollm2_records_match_direct_computation() -> None:
    model = load_model(resolve_model("smollm2-135m")).eval()
    layout = mlp_layout(model)
    assert (layout.n_layers, layout.d_mlp, layout.reads_input) == (30, 1536, True)
    check_layer(model, windows_for("smollm2-135m", 40), [0, 13, 28], [0, 777, 1535])


def test_gemma3_records_match_direct_computation() -> None:
    model = load_model(resolve_model("gemma3-270m")).eval()
    layout = mlp_layout(model)
    assert (layout.n_layers, layout.d_mlp) == (18, 2048)
    check_layer(model, windows_for("gemma3-270m", 24), [1, 16], [0, 1000, 2047])


def test_gpt2_records_match_direct_computation() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=49152, n_positions=64, n_embd=48, n_layer=3, n_head=4, attn_implementation="sdpa")
    model = GPT2LMHeadModel(config).eval()
    layout = mlp_layout(model)
    assert (layout.n_layers, layout.d_mlp, layout.reads_input) == (3, 192, False)
    check_layer(model, windows_for("smollm2-135m", 30), [0, 1], [0, 100, 191])


def test_bf16_on_request_on_the_cpu_records_the_bf16_models_activations() -> None:
    """The CPU runs fp32 unless bf16 is asked for; a bf16 model's records are float32 copies of
    its own bf16 activations, close to the fp32 model's at bf16's resolution."""
    from neuronatlas.adapters.extraction import pick_dtype

    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("bf16", "cpu") == torch.bfloat16
    token_ids = windows_for("smollm2-135m", 16)
    layer, neurons = 3, [0, 777, 1535]
    fp32 = load_model(resolve_model("smollm2-135m")).eval()
    expected = direct_activations(fp32, torch.as_tensor(token_ids), layer)  # (N, T, D) float32
    del fp32
    bf16 = load_model(resolve_model("smollm2-135m")).to(dtype=pick_dtype("bf16", "cpu")).eval()
    pool = random_pool(len(token_ids), 4, np.random.default_rng(3))
    state = extract(bf16, token_ids, [layer], k=K, bottom_candidates=2 * K, pool=pool, batch_size=8, device="cpu")
    accumulator = state[layer]
    assert accumulator.top.activations.dtype == torch.float32
    for neuron in neurons:
        recorded = accumulator.top.activations[neuron]  # (K, T)
        values = expected[accumulator.top.indices[neuron], :, neuron]
        assert not torch.equal(recorded, values)  # bf16 arithmetic, not an fp32 pass
        scale = float(expected[:, :, neuron].abs().max())
        torch.testing.assert_close(recorded, values, atol=0.05 * scale, rtol=0)
    stats = accumulator.stats.result()
    assert stats.n_tokens == token_ids.size and bool(torch.isfinite(stats.variance).all())


def test_forward_pass_stops_after_the_last_requested_layer() -> None:
    """Extracting layer 0 runs only the first block: later blocks never see an input."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=8, n_embd=16, n_layer=4, n_head=2)).eval()
    calls: list[int] = []
    for index, block in enumerate(model.transformer.h):
        block.register_forward_pre_hook(lambda _m, _a, index=index: calls.append(index))
    token_ids = np.random.default_rng(0).integers(0, 100, size=(6, 8))
    extract(model, token_ids, [0], k=2, bottom_candidates=4, pool=np.array([1]), batch_size=3, device="cpu")
    assert calls == [0, 0]  # two batches, block 0 only


def test_unsupported_architecture_is_a_clear_error() -> None:
    from transformers import BertConfig, BertModel

    from neuronatlas.errors import InputError

    model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(InputError, match="BertModel: unsupported architecture"):
        mlp_layout(model)
