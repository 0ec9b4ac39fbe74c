"""Conformance checks for every registered model kind, plain and variational."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from aelab.errors import ModelFormatError
from aelab.models import (
    MODELS,
    Autoencoder,
    ConvAutoencoder,
    DenseAutoencoder,
    Posterior,
    build_model,
)
from aelab.training import loss_terms

LATENT_DIM = 3
KINDS = sorted(MODELS)
VARIANTS = [(kind, variational) for kind in KINDS for variational in (False, True)]
VARIANT_IDS = [f"{kind}-{'vae' if v else 'ae'}" for kind, v in VARIANTS]


def tiny_model(
    kind: str, variational: bool, shape: tuple[int, ...] | None = None
) -> tuple[Autoencoder, torch.Tensor]:
    """Build a small model of ``kind`` and a batch of 2 random inputs for it.

    ``shape`` is one sample's shape: (F,) for dense, (C, H, W) for conv.
    """
    torch.manual_seed(0)
    if kind == "dense":
        shape = shape or (5,)
        model = DenseAutoencoder(
            shape[0], LATENT_DIM, hidden_dims=(16, 8), variational=variational
        )
    elif kind == "conv":
        shape = shape or (2, 8, 8)
        model = ConvAutoencoder(
            *shape, LATENT_DIM, base_channels=4, hidden_dim=16, variational=variational
        )
    else:
        raise AssertionError(f"no tiny configuration for model kind {kind!r}")
    return model, torch.rand(2, *shape)


@pytest.mark.parametrize(("kind", "variational"), VARIANTS, ids=VARIANT_IDS)
def test_forward_keeps_input_shape(kind: str, variational: bool) -> None:
    model, x = tiny_model(kind, variational)
    output = model(x)
    assert output.x_hat.shape == x.shape
    assert output.logits.shape == x.shape
    assert output.z.shape == (2, LATENT_DIM)
    assert (output.posterior is not None) == variational


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("size", [(33, 47), (8, 8), (5, 3), (1, 1)])
def test_conv_output_shape_for_odd_sizes(channels: int, size: tuple[int, int]) -> None:
    model, x = tiny_model("conv", False, (channels, *size))
    assert model(x).x_hat.shape == (2, channels, *size)


@pytest.mark.parametrize(("kind", "variational"), VARIANTS, ids=VARIANT_IDS)
def test_encode_decode_keeps_shape(kind: str, variational: bool) -> None:
    model, x = tiny_model(kind, variational)
    z = model.encode(x)
    assert z.shape == (2, LATENT_DIM)
    assert model.decode(z).shape == x.shape


@pytest.mark.parametrize(("kind", "variational"), VARIANTS, ids=VARIANT_IDS)
def test_gradients_reach_every_parameter(kind: str, variational: bool) -> None:
    model, x = tiny_model(kind, variational)
    model.train()
    loss_terms(model(x), x)["loss"].mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("kind", "variational"), VARIANTS, ids=VARIANT_IDS)
def test_adam_steps_lower_loss(kind: str, variational: bool) -> None:
    model, x = tiny_model(kind, variational)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss = loss_terms(model(x, generator=generator), x)["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0]


@pytest.mark.parametrize(("kind", "variational"), VARIANTS, ids=VARIANT_IDS)
def test_config_round_trip_gives_identical_outputs(
    kind: str, variational: bool
) -> None:
    model, x = tiny_model(kind, variational)
    copy = build_model(model.to_config())
    copy.load_state_dict(model.state_dict())
    model.eval()
    copy.eval()
    assert copy.to_config() == model.to_config()
    assert torch.equal(copy(x).x_hat, model(x).x_hat)


@pytest.mark.parametrize("kind", KINDS)
def test_variational_eval_decodes_posterior_mean(kind: str) -> None:
    model, x = tiny_model(kind, True)
    model.eval()
    output = model(x)
    assert torch.equal(output.z, output.posterior.mean)
    assert torch.equal(output.x_hat, model(x).x_hat)


def test_build_model_rejects_unknown_kind() -> None:
    with pytest.raises(ModelFormatError, match=r"unknown model kind 'rnn'"):
        build_model({"kind": "rnn", "latent_dim": 2})


def test_build_model_rejects_unknown_option() -> None:
    config = {"kind": "dense", "n_features": 5, "latent_dim": 2, "depth": 3}
    with pytest.raises(ModelFormatError, match=r"invalid dense model config"):
        build_model(config)


def test_posterior_kl_matches_closed_form() -> None:
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(4, 6, generator=generator)
    logvar = torch.randn(4, 6, generator=generator)
    expected = kl_divergence(
        Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)
    ).sum(dim=1)
    kl = Posterior(mean, logvar).kl()
    assert kl.shape == (4,)
    torch.testing.assert_close(kl, expected)


def test_posterior_kl_is_zero_for_standard_normal() -> None:
    posterior = Posterior(torch.zeros(3, 5), torch.zeros(3, 5))
    assert torch.equal(posterior.kl(), torch.zeros(3))


def test_posterior_kl_is_finite_for_extreme_logvar() -> None:
    logvar = torch.tensor([[-1000.0, 1000.0]])
    kl = Posterior(torch.zeros(1, 2), logvar).kl()
    assert torch.isfinite(kl).all()


def test_posterior_sample_has_posterior_moments() -> None:
    mean = torch.full((20000, 2), 3.0)
    logvar = torch.full((20000, 2), 2.0 * torch.log(torch.tensor(0.5)).item())
    samples = Posterior(mean, logvar).sample(torch.Generator().manual_seed(0))
    assert samples.mean().item() == pytest.approx(3.0, abs=0.02)
    assert samples.std().item() == pytest.approx(0.5, abs=0.02)
