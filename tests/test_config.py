"""PlaceholderConfig: strict parsing, one error per rule, key paths in messages."""

import pytest

from zero_prior.errors import ConfigError
from zero_prior.placeholder.config import PlaceholderConfig, expanded_token_strings


def test_defaults_are_the_zero_prior_design():
    config = PlaceholderConfig.from_dict(None)
    assert (config.token, config.num_vectors, config.init, config.init_std, config.seed) == (
        "<zwx>", 1, "zero_prior", 1e-5, 42)
    assert config.weight_decay == 0.0 and config.lr is None and config.lstrip is False


@pytest.mark.parametrize(("stop_step", "steps", "pivot"), [(None, 100, None), (30, 100, 30), (0.25, 1000, 250),
                                                           ("0.5", 7, 4), (0.001, 100, 1),
                                                           ("500", 2000, 500)])
def test_stop_step_resolves_against_the_run_length(stop_step, steps, pivot):
    assert PlaceholderConfig.from_dict({"stop_step": stop_step}).pivot_step(steps) == pivot


def test_yaml_style_values_are_coerced():
    config = PlaceholderConfig.from_dict({"init_std": "1e-4", "lr": 1, "weight_decay": 0})
    assert config.init_std == 1e-4 and config.lr == 1.0 and config.weight_decay == 0.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"tokn": "<a>"}, "config.process[0].placeholder.tokn is not a placeholder setting"),
        ({"token": ""}, "config.process[0].placeholder.token is empty or whitespace"),
        ({"token": "   "}, "config.process[0].placeholder.token is empty or whitespace"),
        ({"token": " <a>"}, "config.process[0].placeholder.token ' <a>' has leading or trailing whitespace"),
        ({"token": 5}, "config.process[0].placeholder.token must be a string, got int 5"),
        ({"num_vectors": 0}, "config.process[0].placeholder.num_vectors must be between 1 and 64, got 0"),
        ({"num_vectors": True}, "config.process[0].placeholder.num_vectors must be an integer, got bool True"),
        ({"init": "zeros"}, "config.process[0].placeholder.init must be one of zero_prior, word, vocab_stats"),
        ({"init_std": -1}, "config.process[0].placeholder.init_std must be in (0, 1], got -1.0"),
        ({"init_std": "abc"}, "config.process[0].placeholder.init_std must be a number, got 'abc'"),
        ({"init": "word", "init_word": " "}, "config.process[0].placeholder.init_word must name a word"),
        ({"seed": -3}, "config.process[0].placeholder.seed must be a non-negative integer"),
        ({"lr": 0}, "config.process[0].placeholder.lr must be in (0, 1], got 0.0"),
        ({"weight_decay": 2}, "config.process[0].placeholder.weight_decay must be in [0, 1], got 2.0"),
        ({"lstrip": "yes"}, "config.process[0].placeholder.lstrip must be true or false, got str 'yes'"),
        ({"lstrip": True}, "config.process[0].placeholder.lstrip: true is not supported (the token would absorb"),
        ({"stop_step": 0}, "config.process[0].placeholder.stop_step must be at least 1 step, got 0"),
        ({"stop_step": 1.0}, "config.process[0].placeholder.stop_step 1.0 is a float, so a fraction of train.steps"),
        ({"stop_step": True}, "config.process[0].placeholder.stop_step must be a step count (integer) or a fraction"),
        ({"stop_step": "half"}, "config.process[0].placeholder.stop_step must be a number, got 'half'"),
        ({"prefix_cache": "on"}, "config.process[0].placeholder.prefix_cache must be true or false, got str 'on'"),
    ],
)
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ConfigError) as error:
        PlaceholderConfig.from_dict(raw, path="config.process[0].placeholder")
    assert str(error.value).startswith(message)


def test_block_must_be_a_mapping():
    with pytest.raises(ConfigError, match="placeholder must be a mapping of settings, got list"):
        PlaceholderConfig.from_dict(["<zwx>"])


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="placeholder.num_vectors must be between 1 and 64"):
        PlaceholderConfig(num_vectors=65)


def test_multi_vector_entries():
    assert expanded_token_strings("<zwx>", 3) == ("<zwx>", "<zwx_1>", "<zwx_2>")
    assert expanded_token_strings("zwx", 2) == ("zwx", "zwx_1")
    assert PlaceholderConfig(num_vectors=1).token_strings == ("<zwx>",)


def test_round_trip_through_dict():
    config = PlaceholderConfig(token="<sks9>", num_vectors=2, init="word", init_word="dog", lr=1e-3)
    assert PlaceholderConfig.from_dict(config.to_dict()) == config
