"""The `openai:` backend against a real OpenAI-compatible server process: llama-cpp-python's server
serving the shipped Qwen2.5-Coder-0.5B GGUF (built portable, `CMAKE_ARGS=-DGGML_NATIVE=OFF`):
explanations, JSON simulation, and Yes/No readouts from `top_logprobs`, which match the same
weights run in process. (Its echoed prompt log-probs are shifted by one position: no all-at-once
simulation through this server.)"""

from neuronatlas.adapters.openai_llm import OpenAIBackend
from neuronatlas.core.explain import Record, json_simulations
from neuronatlas.core.llm import GenerationParams
from neuronatlas.core.parsing import parse_explanation
from neuronatlas.core.prompts import ActivationRecord, explainer_prompt, json_simulation_prompt


def test_explains_through_a_real_server(llama_server: str) -> None:
    backend = OpenAIBackend("qwen-0.5b", base_url=llama_server, concurrency=1, timeout_s=120)
    record = ActivationRecord([" in", " 1932", " and", " in", " 1987"], [0.0, 4.0, 0.0, 0.0, 3.5])
    params = GenerationParams(n=2, temperature=0.0, max_tokens=30)
    [answer] = backend.generate([explainer_prompt([record])], params)
    assert answer.failure is None, answer.failure
    assert len(answer.texts) == 2
    explanation = parse_explanation(answer.texts[0])
    assert isinstance(explanation, str), explanation  # greedy: a sentence, the prefix stripped
    assert not explanation.lower().startswith("the main thing")
    assert answer.prompt_tokens > 2 * 300 and answer.completion_tokens > 0  # the server's own accounting, 2 requests
    assert backend.usage.calls == 2


def test_json_simulation_through_a_real_server_aligns_or_fails_with_a_reason(llama_server: str) -> None:
    import numpy as np

    backend = OpenAIBackend("qwen-0.5b", base_url=llama_server, concurrency=1, timeout_s=120)
    excerpts = [(" The", " bridge", " opened", " in", " 1932", "."), (" Born", " in", " 1901", ",", " she")]
    prompt = json_simulation_prompt("years written as four-digit numbers.", excerpts, 9)
    [answer] = backend.generate([prompt], GenerationParams(n=1, temperature=0.0, max_tokens=24 * 11 + 32 * 2))
    assert answer.failure is None, answer.failure
    records = [Record("top", "valid", 0, i, t, np.zeros(len(t), dtype=np.float32)) for i, t in enumerate(excerpts)]
    simulations = json_simulations([(answer.texts[0], None)], [records], 9)
    assert len(simulations) == len(excerpts)
    for simulation, tokens in zip(simulations, excerpts, strict=True):
        if simulation.values is None:  # a small model may break the format: then a reason, never zeros
            assert simulation.failure
        else:
            assert len(simulation.values) == len(tokens)
            assert ((simulation.values >= 0) & (simulation.values <= 9)).all()


READOUT_TOLERANCE = 0.05
"""|P(Yes | Yes or No)| between the server and the same GGUF weights in process (fp32). Measured
up to 0.025: llama.cpp computes with the Q4_K_M blocks, transformers with their dequantised
float weights; the server's prompt cache (a partly shared prefix) moves it by up to 0.007."""


def test_yes_no_readouts_over_the_server_match_the_same_weights_in_process(llama_server: str) -> None:
    from neuronatlas.adapters.local_llm import LocalBackend
    from neuronatlas.core.prompts import detection_prompt

    prompt = detection_prompt("years written as four-digit numbers.")
    texts = [
        "The bridge opened in 1932 and closed in 1987.",
        "She walked to the market with her brother.",
        "Elections were held in 1990.",
    ]
    api = OpenAIBackend("qwen-0.5b", base_url=llama_server, concurrency=1, timeout_s=120)
    assert api.can_read_choices, api.abilities  # the probe found top_logprobs
    remote = api.read_choices(prompt, texts)
    assert remote.failure is None, remote.failure
    local = LocalBackend("qwen2.5-coder-0.5b", device="cpu", dtype="fp32").read_choices(prompt, texts)
    assert local.failure is None, local.failure
    for (remote_yes, remote_no), (local_yes, local_no) in zip(remote.probabilities, local.probabilities, strict=True):
        assert remote_yes + remote_no > 0.5  # the answer is almost surely Yes or No
        assert abs(remote_yes / (remote_yes + remote_no) - local_yes / (local_yes + local_no)) <= READOUT_TOLERANCE
    assert api.usage.calls == 1 + len(texts)  # the probe, then one request per text


def test_the_servers_shifted_prompt_logprobs_are_detected_and_all_at_once_is_refused(llama_server: str) -> None:
    from neuronatlas.adapters.openai_llm import chat_template
    from neuronatlas.core.prompts import all_at_once_prompt

    template = chat_template("qwen2.5-coder-0.5b")[1]
    backend = OpenAIBackend("qwen-0.5b", base_url=llama_server, concurrency=1, timeout_s=120, template=template)
    assert not backend.can_read_digits
    readout = backend.read_digits(all_at_once_prompt("years."), [[" in", " 1932"]])
    assert readout.failure is not None and "shifted by one position" in readout.failure
    assert backend.usage.calls == 1  # the probe only: nothing was read from the misaligned server
