"""Hand-computed values for every loss on one small pair; the arithmetic is written out."""

import math

import pytest
import torch

from alphapo.losses import available_losses, kto_loss, preference_loss

# One pair: chosen has 2 tokens, rejected 3.
LOGP_W, LOGP_L = -4.0, -7.5
LEN_W, LEN_L = 2, 3
REF_W, REF_L = -5.0, -5.5
U_W, U_L = LOGP_W - REF_W, LOGP_L - REF_L  # log-ratios: 1.0 and -2.0


def log1pexp(x: float) -> float:
    """-log sigmoid(-x)."""
    return math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def logsig(x: float) -> float:
    return -log1pexp(-x)


def run(name, **hp):
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    ref = {"ref_chosen_logps": t(REF_W), "ref_rejected_logps": t(REF_L)}
    from alphapo.losses import get_loss_spec

    if not get_loss_spec(name).needs_reference:
        ref = {}
    out = preference_loss(name, t(LOGP_W), t(LOGP_L), t(LEN_W), t(LEN_L), **ref, **hp)
    return out


CASES = {
    # DPO: h = 1 - (-2) = 3, beta h = 0.3, loss = log(1 + e^-0.3)
    ("sigmoid", ()): log1pexp(-0.3),
    # conservative DPO, e = 0.2: 0.8 log(1+e^-0.3) + 0.2 log(1+e^0.3)
    ("sigmoid", (("label_smoothing", 0.2),)): 0.8 * log1pexp(-0.3) + 0.2 * log1pexp(0.3),
    # RPO: DPO + 1.0 * mean NLL of chosen = 4 / 2 = 2
    ("sigmoid", (("nll_weight", 1.0),)): log1pexp(-0.3) + 2.0,
    # shaped DPO, alpha 0.5: s_w = (1 - e^-0.5)/0.5, s_l = (1 - e^1)/0.5
    ("sigmoid", (("alpha", 0.5),)): log1pexp(-0.1 * ((1 - math.exp(-0.5)) / 0.5 - (1 - math.exp(1.0)) / 0.5)),
    # robust, e = 0.1: (0.9 log(1+e^-0.3) - 0.1 log(1+e^0.3)) / 0.8
    ("robust", ()): (0.9 * log1pexp(-0.3) - 0.1 * log1pexp(0.3)) / 0.8,
    # hinge: max(0, 1 - 0.3) = 0.7
    ("hinge", ()): 0.7,
    # IPO on per-token log-ratios: h = 1/2 - (-2/3) = 7/6; (7/6 - 1/(2*0.1))^2 = (7/6 - 5)^2
    ("ipo", ()): (7 / 6 - 5) ** 2,
    # EXO, e = 1e-3: q_w (log q_w - log 0.999) + q_l (log q_l - log 0.001), q = sigmoid(+-0.3)
    ("exo_pair", ()): sig(0.3) * (logsig(0.3) - math.log(0.999)) + sig(-0.3) * (logsig(-0.3) - math.log(1e-3)),
    # NCA: r_w = 0.1, r_l = -0.2
    ("nca_pair", ()): -logsig(0.1) - 0.5 * logsig(-0.1) - 0.5 * logsig(0.2),
    # BCO: delta = mean(0.1, -0.2) = -0.05; -log sig(0.1 + 0.05) - log sig(-(-0.2 + 0.05))
    ("bco_pair", ()): -logsig(0.15) - logsig(0.15),
    # BCO with an explicit shift of 0: -log sig(0.1) - log sig(0.2)
    ("bco_pair", (("delta", 0.0),)): -logsig(0.1) - logsig(0.2),
    # SPPO hard: (1 - 5)^2 + (-2 + 5)^2 = 16 + 9
    ("sppo_hard", ()): 25.0,
    # APO zero: (1 - sig(0.1)) + sig(-0.2)
    ("apo_zero", ()): (1 - sig(0.1)) + sig(-0.2),
    # APO down: sig(0.1) + 1 - sig(0.3)
    ("apo_down", ()): sig(0.1) + 1 - sig(0.3),
    # DiscoPOP, beta 0.05, tau 0.05: x = 0.15, m = sig(3); (1 - m) log(1+e^-x) + m e^-x
    ("discopop", ()): (1 - sig(3.0)) * log1pexp(-0.15) + sig(3.0) * math.exp(-0.15),
    # R-DPO: x = 0.3 + 0.05 (2 - 3) = 0.25
    ("rdpo", ()): log1pexp(-0.25),
    # KTO on pairs, kl 0: ((1 - sig(0.1)) + (1 - sig(0 - (-0.2)))) / 2
    ("kto", ()): ((1 - sig(0.1)) + (1 - sig(0.2))) / 2,
    # KTO with kl 0.5: z0 = 0.05; ((1 - sig(0.05)) + (1 - sig(0.25))) / 2
    ("kto", (("kl", 0.5),)): ((1 - sig(0.05)) + (1 - sig(0.25))) / 2,
    # SimPO: l_w = -2, l_l = -2.5, r = 2.5 l: r_w - r_l - gamma = 1.25 - 0.25 = 1
    ("simpo", ()): log1pexp(-1.0),
    # SimPO via gamma_beta_ratio 0.2 -> gamma = 0.5: x = 0.75
    ("simpo", (("gamma_beta_ratio", 0.2),)): log1pexp(-0.75),
    # AlphaPO, alpha 0.25: r = 2.5 (1 - e^{-0.25 l}) / 0.25 = 10 (1 - e^{-l/4});
    # r_w - r_l = 10 (e^{0.625} - e^{0.5}); x = that - 0.25
    ("alphapo", ()): log1pexp(-(10 * (math.exp(0.625) - math.exp(0.5)) - 0.25)),
    # AlphaPO with alpha -1: r = 2.5 (1 - e^{l}) / -1; x = 2.5 (e^-2 - e^-2.5) - 0.25
    ("alphapo", (("alpha", -1.0),)): log1pexp(-(2.5 * (math.exp(-2) - math.exp(-2.5)) - 0.25)),
    # CPO: h = -4 + 7.5 = 3.5, beta h = 0.35; plus 1.0 * NLL = 2
    ("cpo", ()): log1pexp(-0.35) + 2.0,
    # ORPO: l_w = -2, l_l = -2.5; log-odds = 0.5 - (log(1 - e^-2) - log(1 - e^-2.5)); 2 - 0.1 log sig(.)
    ("orpo", ()): 2.0 - 0.1 * logsig(0.5 - (math.log(1 - math.exp(-2)) - math.log(1 - math.exp(-2.5)))),
    # --- options off the default path
    # SimPO with label smoothing 0.1 (x = 1 as above): 0.9 log(1+e^-1) + 0.1 log(1+e^1)
    ("simpo", (("label_smoothing", 0.1),)): 0.9 * log1pexp(-1.0) + 0.1 * log1pexp(1.0),
    # AlphaPO with label smoothing 0.1: x = 10 (e^0.625 - e^0.5) - 0.25
    ("alphapo", (("label_smoothing", 0.1),)): 0.9 * log1pexp(-(10 * (math.exp(0.625) - math.exp(0.5)) - 0.25))
    + 0.1 * log1pexp(10 * (math.exp(0.625) - math.exp(0.5)) - 0.25),
    # AlphaPO on summed log-probs (l = -4, -7.5): x = 10 (e^1.875 - e^1) - 0.25
    ("alphapo", (("length_normalize", False),)): log1pexp(-(10 * (math.exp(1.875) - math.exp(1.0)) - 0.25)),
    # AlphaPO + 0.5 x chosen NLL (4 / 2 = 2)
    ("alphapo", (("nll_weight", 0.5),)): log1pexp(-(10 * (math.exp(0.625) - math.exp(0.5)) - 0.25)) + 1.0,
    # KTO on per-token log-ratios (0.5, -2/3), kl 0: ((1 - sig(0.05)) + (1 - sig(0.2/3))) / 2
    ("kto", (("length_normalize", True),)): ((1 - sig(0.05)) + (1 - sig(0.2 / 3))) / 2,
    # IPO on summed log-ratios: h = 3; (3 - 5)^2
    ("ipo", (("length_normalize", False),)): 4.0,
    # CPO with label smoothing 0.2: 0.8 log(1+e^-0.35) + 0.2 log(1+e^0.35) + NLL 2
    ("cpo", (("label_smoothing", 0.2),)): 0.8 * log1pexp(-0.35) + 0.2 * log1pexp(0.35) + 2.0,
    # CPO with alpha 0.5 on summed log-probs: s = (1 - e^{-0.5 l}) / 0.5 for l = -4, -7.5
    ("cpo", (("alpha", 0.5),)): log1pexp(-0.1 * ((1 - math.exp(2.0)) / 0.5 - (1 - math.exp(3.75)) / 0.5)) + 2.0,
    # DPO with its NLL term off the chosen length: RPO on a 2-token chosen answer, weight 0.25
    ("sigmoid", (("nll_weight", 0.25), ("label_smoothing", 0.2))): 0.8 * log1pexp(-0.3) + 0.2 * log1pexp(0.3) + 0.5,
}

# (chosen reward, rejected reward) of every loss with its defaults, by hand. Reference-based:
# beta * log-ratio (per token for IPO); SimPO/AlphaPO: beta * shaped mean log-prob; CPO: beta * sum;
# ORPO: beta * mean log-prob.
REWARDS = {
    "sigmoid": (0.1, -0.2),
    "robust": (0.1, -0.2),
    "hinge": (0.1, -0.2),
    "ipo": (0.1 * 0.5, 0.1 * -2 / 3),
    "exo_pair": (0.1, -0.2),
    "nca_pair": (0.1, -0.2),
    "bco_pair": (0.1, -0.2),
    "sppo_hard": (0.1, -0.2),
    "apo_zero": (0.1, -0.2),
    "apo_down": (0.1, -0.2),
    "discopop": (0.05, -0.1),
    "rdpo": (0.1, -0.2),
    "kto": (0.1, -0.2),
    "simpo": (-5.0, -6.25),
    "alphapo": (10 * (1 - math.exp(0.5)), 10 * (1 - math.exp(0.625))),
    "cpo": (-0.4, -0.75),
    "orpo": (-0.2, -0.25),
}


@pytest.mark.parametrize(("name", "hp"), list(CASES), ids=[f"{n}-{dict(h)}" for n, h in CASES])
def test_hand_computed_value(name, hp):
    out = run(name, **dict(hp))
    assert out.losses.shape == (1,)
    assert out.losses.item() == pytest.approx(CASES[(name, hp)], rel=1e-12, abs=1e-12)


def test_every_loss_has_a_hand_computed_case():
    assert {name for name, _ in CASES} == set(available_losses()) == set(REWARDS)


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_hand_computed_rewards(name):
    out = run(name)
    expected_w, expected_l = REWARDS[name]
    assert out.chosen_rewards.item() == pytest.approx(expected_w, rel=1e-12)
    assert out.rejected_rewards.item() == pytest.approx(expected_l, rel=1e-12)
    assert out.margins.item() == pytest.approx(expected_w - expected_l, rel=1e-12)


def test_rewards_and_nll():
    out = run("sigmoid")
    assert out.chosen_rewards.item() == pytest.approx(0.1 * U_W)
    assert out.rejected_rewards.item() == pytest.approx(0.1 * U_L)
    assert out.margins.item() == pytest.approx(0.3)
    assert out.nll.item() == pytest.approx(2.0)  # -(-4) / 2
    assert out.logits.item() == pytest.approx(0.3)  # extras are attributes
    simpo = run("simpo")
    assert simpo.chosen_rewards.item() == pytest.approx(2.5 * -2.0)
    assert simpo.rejected_rewards.item() == pytest.approx(2.5 * -2.5)


def test_dpo_alias_and_length_normalize_override():
    assert run("dpo").losses.item() == run("sigmoid").losses.item()
    # DPO on per-token log-ratios: h = 7/6
    assert run("sigmoid", length_normalize=True).losses.item() == pytest.approx(log1pexp(-0.1 * 7 / 6))


def test_kto_unpaired():
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    # two desirable (u = 1, 3), one undesirable (u = -2); kl 0.5 -> z0 = 0.05; weights 1 and 2
    out = kto_loss(t(-1.0, 0.0), t(-4.0), t(-2.0, -3.0), t(-2.0), kl=0.5, undesirable_weight=2.0)
    expected = [1 - sig(0.1 - 0.05), 1 - sig(0.3 - 0.05), 2 * (1 - sig(0.05 + 0.2))]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert out.desirable_rewards.tolist() == pytest.approx([0.1, 0.3])
    assert out.undesirable_rewards.tolist() == pytest.approx([-0.2])
    # a negative KL estimate is clamped to 0
    clamped = kto_loss(t(-1.0), t(-4.0), t(-2.0), t(-2.0), kl=-3.0)
    assert clamped.losses.tolist() == pytest.approx([1 - sig(0.1), 1 - sig(0.2)])
    # length-normalised: u / n with n = 2, 4 (desirable) and 4 (undesirable)
    n = kto_loss(
        t(-1.0, 0.0),
        t(-4.0),
        t(-2.0, -3.0),
        t(-2.0),
        kl=0.0,
        length_normalize=True,
        desirable_lengths=t(2.0, 4.0),
        undesirable_lengths=t(4.0),
    )
    assert n.losses.tolist() == pytest.approx([1 - sig(0.05), 1 - sig(0.3 / 4), 1 - sig(0.2 / 4)], rel=1e-12)
    # an empty group is allowed
    only_desirable = kto_loss(t(-1.0), t(), t(-2.0), t(), kl=0.0)
    assert only_desirable.losses.tolist() == pytest.approx([1 - sig(0.1)])
