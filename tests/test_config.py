"""TrainConfig and Hparams refuse values of the wrong type or range, naming the field."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax.config import Hparams, TrainConfig


def test_defaults_and_round_trip_pass():
    config = TrainConfig(beta_range=[2, 20], frozen=["policy"], num_steps=np.int64(200), informative_fraction=1)
    assert config.beta_range == (2, 20) and config.frozen == ("policy",)        # lists become tuples
    assert type(config.num_steps) is int and config.informative_fraction == 1.0
    assert TrainConfig.from_dict(config.to_dict()) == config
    recorded = config.to_json()                                                  # as result files hold it
    assert recorded["beta_range"] == [2.0, 20.0] and recorded["frozen"] == ["policy"]
    assert TrainConfig.from_dict(recorded) == config
    assert Hparams.create().batch_shape == ()


@pytest.mark.parametrize("changes, message", [
    (dict(hidden=2.5), "hidden must be an integer, got 2.5"),
    (dict(hidden="16"), "hidden must be an integer, got '16'"),
    (dict(num_steps=20.0, chunk_steps=10), "num_steps must be an integer"),
    (dict(valid_users=True), "valid_users must be an integer"),
    (dict(gaussian_encoder=1), "gaussian_encoder must be true or false"),
    (dict(profile=3), "profile must be a string"),
    (dict(beta_range=(-3.0, 0.0)), "beta_range must be two positive numbers lo <= hi"),
    (dict(beta_range=(30.0, 3.0)), "beta_range must be two positive numbers lo <= hi"),
    (dict(beta_range=(3.0,)), "beta_range must be two finite numbers"),
    (dict(log10_lam_range=(2.0, -2.0)), "log10_lam_range must be .* lo < hi"),
    (dict(log10_lam_range=(0.0, float("inf"))), "log10_lam_range must be two finite numbers"),
    (dict(informative_fraction=2.0), r"informative_fraction must be in \[0, 1\]"),
    (dict(pool_dropout=float("nan")), "pool_dropout must be a finite number"),
    (dict(answer_weight=1e300), r"answer_weight must be a finite number \(in float32's range\), got 1e\+300"),
    (dict(frozen="policy"), "frozen must be a list of network parts"),
    (dict(valid_criterion="median"), "valid_criterion must be one of .*'worst_band'"),
    (dict(valid_bands=0), "valid_bands must be >= 1"),
    (dict(valid_users=4, valid_bands=8), r"valid_bands \(8\) must be at most valid_users \(4\)"),
])
def test_train_config_names_the_bad_field(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


@pytest.mark.parametrize("values, message", [
    (dict(learning_rate=float("nan")), "learning_rate must be finite"),
    (dict(learning_rate=0.0), "learning_rate must be > 0"),
    (dict(learning_rate=[1e-3, -1e-3]), r"learning_rate must be > 0, got \[-0.001"),
    (dict(outcome_noise=-3), "outcome_noise must be >= 0"),
    (dict(kl_weight=float("inf")), "kl_weight must be finite"),
    (dict(flip_max=5.0), "flip_max must be <= 1"),
    (dict(learning_rate="fast"), "learning_rate must be a number"),
])
def test_hparams_name_the_bad_value(values, message):
    with pytest.raises(ValueError, match=message):
        Hparams.create(**values)


def test_hparams_create_still_traces():
    # A traced value has no value to check: create under jit or vmap must not try.
    lr = jax.jit(lambda x: Hparams.create(learning_rate=x).learning_rate)(jnp.float32(-1.0))
    assert float(lr) == -1.0
    assert mr.Hparams.create(weight_decay=0.0, entropy_end=0.0).weight_decay == 0.0   # 0 is a valid weight
