"""Each documented error case raises its exception with a useful message."""

import pytest
import torch

from alphapo.errors import ConfigError, InputError, MissingReferenceError
from alphapo.losses import kto_loss, preference_loss

W, L = torch.tensor([-3.0, -4.0]), torch.tensor([-5.0, -6.0])
N = torch.tensor([2, 3])


def call(name="alphapo", *args, **kw):
    args = args or (W, L, N, N)
    return preference_loss(name, *args, **kw)


def test_unknown_loss_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown loss 'alphpo'.*did you mean 'alphapo'"):
        call("alphpo")
    with pytest.raises(ConfigError, match="did you mean 'simpo'"):
        call("simpoo")


def test_unknown_hyperparameter_suggests_closest():
    with pytest.raises(ConfigError, match=r"no hyper-parameter 'betta'.*did you mean 'beta'"):
        call(betta=1.0)


def test_missing_reference():
    with pytest.raises(MissingReferenceError, match="'sigmoid' needs reference log-probs"):
        call("sigmoid")
    with pytest.raises(MissingReferenceError):
        call("kto", W, L, N, N, W, None)


def test_reference_given_to_reference_free_loss():
    with pytest.raises(ConfigError, match="reference-free"):
        call("simpo", W, L, N, N, W, L)


def test_mismatched_shapes():
    with pytest.raises(InputError, match=r"rejected_logps has shape \(3,\) but chosen_logps has \(2,\)"):
        call("alphapo", W, torch.tensor([-1.0, -2.0, -3.0]), N, N)
    with pytest.raises(InputError, match="must be 1-D"):
        call("alphapo", W[None], L[None], N[None], N[None])
    with pytest.raises(InputError, match=r"must be a torch\.Tensor"):
        call("alphapo", [-3.0, -4.0], L, N, N)


def test_non_finite_inputs():
    with pytest.raises(InputError, match=r"chosen_logps is not finite at index 1"):
        call("alphapo", torch.tensor([-1.0, float("nan")]), L, N, N)
    with pytest.raises(InputError, match="ref_rejected_logps is not finite"):
        call("sigmoid", W, L, N, N, W, torch.tensor([float("-inf"), -1.0]))


def test_non_positive_lengths():
    with pytest.raises(InputError, match=r"rejected_lengths\[1\] = 0"):
        call("alphapo", W, L, N, torch.tensor([2, 0]))


@pytest.mark.parametrize(
    ("name", "hp", "pattern"),
    [
        ("alphapo", {"beta": 0.0}, "beta=0.0 must be > 0"),
        ("sigmoid", {"beta": -1}, "beta=-1 must be > 0"),
        ("sigmoid", {"label_smoothing": 0.5}, r"label_smoothing=0.5 must be in \[0, 0.5\)"),
        ("robust", {"label_smoothing": -0.1}, "label_smoothing=-0.1"),
        ("exo_pair", {"label_smoothing": 0.0}, r"exo_pair: label_smoothing must be in \(0, 0.5\)"),
        ("discopop", {"tau": 0}, "tau=0 must be > 0"),
        ("cpo", {"cpo_alpha": -1.0}, "cpo_alpha=-1.0 must be >= 0"),
        ("alphapo", {"gamma": float("nan")}, "gamma=nan must be a finite number"),
        ("alphapo", {"beta": "2.5"}, "beta='2.5' must be a finite number"),
        ("alphapo", {"alpha": float("inf")}, "alpha=inf must be a finite number"),
        ("alphapo", {"nll_weight": -1.0}, "nll_weight=-1.0 must be >= 0"),
        ("simpo", {"alpha": 0.25}, "simpo.*alpha must be 0.*use 'alphapo'"),
        ("orpo", {"alpha": 0.25}, "'orpo' has no reward-shape option"),
        ("alphapo", {"gamma": 0.1, "gamma_beta_ratio": 0.1}, "give gamma or gamma_beta_ratio, not both"),
    ],
)
def test_invalid_hyperparameters(name, hp, pattern):
    args = (W, L, N, N) if name in {"alphapo", "simpo", "cpo", "orpo"} else (W, L, N, N, W, L)
    with pytest.raises(ConfigError, match=pattern):
        preference_loss(name, *args, **hp)


def test_gamma_beta_ratio_needs_a_margin():
    with pytest.raises(ConfigError, match="no margin gamma"):
        call("sigmoid", W, L, N, N, W, L, gamma_beta_ratio=0.1)


def test_kto_errors():
    with pytest.raises(InputError, match="one finite number"):
        kto_loss(W, L, W, L, kl=float("nan"))
    with pytest.raises(InputError, match="needs desirable_lengths"):
        kto_loss(W, L, W, L, kl=0.0, length_normalize=True)
    with pytest.raises(ConfigError, match="beta=0 must be > 0"):
        kto_loss(W, L, W, L, kl=0.0, beta=0)
    with pytest.raises(InputError, match="ref_desirable_logps has shape"):
        kto_loss(W, L, W[:1], L, kl=0.0)
