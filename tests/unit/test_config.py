"""One typed config per stage: its fields are the command's options, the flow's parameters and a
run file's keys; a run's resolved config reads back as the same config."""

import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neuronatlas.cli import app
from neuronatlas.cli.options import parameter_name
from neuronatlas.config import (
    AtlasConfig,
    ExplainConfig,
    ExtractConfig,
    IngestConfig,
    LLMOptions,
    ScoreConfig,
    ValidityConfig,
    atlas_flat,
    atlas_from_flat,
    atlas_parameters,
    flat_fields,
    overlay,
    profiles,
)
from neuronatlas.errors import InputError

COMMANDS = {
    "ingest": [IngestConfig],
    "extract": [ExtractConfig],
    "explain": [ExplainConfig, LLMOptions],
    "score": [ScoreConfig, LLMOptions],
    "validity": [ValidityConfig, LLMOptions],
}


def command_parameters(name: str) -> dict[str, inspect.Parameter]:
    [registered] = [c for c in app.registered_commands if c.name == name]
    return dict(inspect.signature(registered.callback).parameters)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_config_field_is_an_option_with_its_default_and_help(name: str) -> None:
    parameters = command_parameters(name)
    for config in COMMANDS[name]:
        for field, info in config.model_fields.items():
            parameter = parameters[parameter_name(config, field)]
            assert parameter.default == getattr(config(), field), (name, field)
            assert info.description, f"{config.__name__}.{field} has no docstring"
    assert set(parameters) == {"root"} | {parameter_name(c, f) for c in COMMANDS[name] for f in c.model_fields}


def test_the_help_shows_each_fields_docstring_under_its_option() -> None:
    result = CliRunner().invoke(app, ["explain", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option, text in [
        ("--prompt-format", "tokens (strongest tokens listed"),
        ("--llm-device", "auto, cpu or cuda (local: backends)"),
        ("--usd-per-m-in", "Dollars per million prompt tokens"),
        ("--batch-api", "Use the OpenAI Batch API"),
    ]:
        assert option in result.output and text in result.output


def test_the_atlas_flow_takes_every_stage_parameter() -> None:
    from neuronatlas.flows.atlas import atlas

    parameters = inspect.signature(atlas.fn).parameters
    for name in flat_fields():
        assert name in parameters
    assert parameters["limit"].default == 2048 and parameters["neurons"].default == "2"
    assert parameters["samples"].default == 1 and parameters["layers"].default == "all"
    # chained inputs are the atlas's own business
    assert not {"corpus", "activations", "explanations", "tokenizer_of"} & set(parameters)
    assert {p.name for p in atlas_parameters()} <= set(parameters)


def test_the_stage_flows_take_their_configs_fields() -> None:
    from neuronatlas.flows.explain import explain_neurons
    from neuronatlas.flows.extract import extract_activations
    from neuronatlas.flows.ingest import ingest_corpus
    from neuronatlas.flows.score import simulate_and_score
    from neuronatlas.flows.validity import validity

    for flow, config in [
        (ingest_corpus, IngestConfig),
        (extract_activations, ExtractConfig),
        (explain_neurons, ExplainConfig),
        (simulate_and_score, ScoreConfig),
        (validity, ValidityConfig),
    ]:
        parameters = inspect.signature(flow.fn).parameters
        for field in config.model_fields:
            assert parameters[field].default == getattr(config(), field), (flow.name, field)


def test_a_toml_table_given_in_part_keeps_the_runs_defaults(tmp_path: Path) -> None:
    path = tmp_path / "atlas.toml"
    path.write_text(
        'runner = "local"\n[explain]\nsamples = 3\n[extract]\nmodel = "gemma3-270m"\n[llm]\nconcurrency = 2\n'
    )
    config = AtlasConfig.load(str(path))
    assert config.explain.samples == 3 and config.explain.neurons == "2"  # the run's default, not the stage's 24
    assert config.extract.limit == 2048 and config.extract.model == "gemma3-270m"
    assert config.ingest.tokenizer_of == "gemma3-270m"  # the corpus is cut with the subject's tokenizer
    assert config.llm.concurrency == 2 and config.llm.dtype == "bf16"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[explain]\nsampels = 3\n", "explain.sampels: extra inputs are not permitted"),
        ("[extract]\ntop_k = 'many'\n", "extract.top_k: input should be a valid integer"),
        ("neurons = 3\n", "neurons: extra inputs are not permitted"),
        ("[explain\n", "not a TOML config"),
    ],
)
def test_a_bad_config_file_is_an_error_naming_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=r"--config .*bad\.toml") as raised:
        AtlasConfig.load(str(path))
    assert message in str(raised.value)


def test_a_run_record_reads_back_as_its_config(tmp_path: Path) -> None:
    config = atlas_from_flat({"neurons": "5:1,6:2", "seed": 3, "scorers": "embedding", "limit": 0})
    assert config.extract.limit is None  # 0: the whole corpus
    assert config.extract.seed == config.explain.seed == config.score.seed == 3
    record = tmp_path / "a-1.json"
    record.write_text(json.dumps({"run_id": "a-1", "config": config.model_dump()}))
    assert AtlasConfig.load(str(record)) == config
    record.write_text(json.dumps({"run_id": "a-1"}))
    with pytest.raises(InputError, match="without its config"):
        AtlasConfig.load(str(record))


def test_flat_parameters_laid_over_a_config() -> None:
    config = AtlasConfig.of({"explain": {"neurons": "7", "samples": 2}})
    assert atlas_from_flat({**atlas_flat(config), "options": config.llm}) == config
    changed = overlay(config, {"neurons": "9", "seed": 1}, {"budget_usd": 2.0})
    assert changed.explain.neurons == "9" and changed.explain.samples == 2
    assert changed.extract.seed == changed.score.seed == 1 and changed.llm.budget_usd == 2.0
    uneven = AtlasConfig.of({"explain": {"seed": 1}, "score": {"seed": 2}})
    assert overlay(uneven, {}) == uneven
    with pytest.raises(InputError, match="different seeds or scales"):
        overlay(uneven, {"neurons": "3"})
    with pytest.raises(InputError, match="unknown parameter corpus"):
        atlas_from_flat({"corpus": "c-1"})


def test_a_profile_is_a_config_named_by_its_name() -> None:
    assert profiles() == ["large-atlas"]
    large = AtlasConfig.load("large-atlas")
    assert large.score.splits == "valid" and large.score.scorers == "simulation"
    assert (large.extract.top_k, large.extract.random_k, large.extract.limit) == (12, 9, None)
    assert large.explain.neurons == "all" and large.explain.samples == 1
    assert large.llm == LLMOptions()  # the server, model and budget are the user's
    with pytest.raises(InputError, match=r"--config huge-atlas: no such file \(nor a profile: large-atlas\)"):
        AtlasConfig.load("huge-atlas")


def test_neurons_all_is_every_neuron_of_the_chosen_layers() -> None:
    import numpy as np

    from neuronatlas.core.layers import parse_neurons

    rng = np.random.default_rng(0)
    assert parse_neurons("all", [5, 2], 3, rng) == [(2, 0), (2, 1), (2, 2), (5, 0), (5, 1), (5, 2)]
    assert parse_neurons("2:1,5:0", [5, 2], 3, rng) == [(2, 1), (5, 0)]
