"""Figure 1 of the paper: SFT versus iw-SFT on a two-armed bandit.

pull-left pays 1 with probability 0.5, pull-right with probability 1; pi_ref is uniform. Filtering
N reference draws by reward leaves about 2 right : 1 left, so SFT converges to p(right) = 2/3 while
iw-SFT (q = pi_theta) keeps shifting weight to the arm it already prefers and reaches p(right) = 1.

The policy is a softmax over two logits; each action is a one-token "sequence", trained through
the same `iw_objective` and q sources as the language models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.training.objective import iw_objective, preset
from harness.training.qsource import make_q_source

LEFT, RIGHT = 0, 1


@dataclass(frozen=True)
class ToyConfig:
    n_draws: int = 10_000     # reference draws before filtering; large so the 2:1 ratio is tight
    steps: int = 400
    lr: float = 0.05          # Adam, full batch
    seed: int = 0
    q_every: int = 20         # lagged-q variant: theta_q <- theta every q_every steps
    q_ema_decay: float = 0.9  # EMA variant, the paper's control setting


class Bandit(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2))   # uniform = pi_ref

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        """Log-prob of each action, shaped [N, 1] like per-token log-probs of 1-token sequences."""
        return torch.log_softmax(self.logits.float(), -1)[actions][:, None]


def curated_dataset(cfg: ToyConfig) -> torch.Tensor:
    """Actions of the reference draws that earned reward 1 (D+)."""
    g = torch.Generator().manual_seed(cfg.seed)
    actions = torch.randint(0, 2, (cfg.n_draws,), generator=g)
    pay_prob = torch.where(actions == RIGHT, 1.0, 0.5)
    reward = torch.rand(cfg.n_draws, generator=g) < pay_prob
    return actions[reward]


METHODS = {
    # name: (weighting preset, q source)
    "sft": ("sft", "lag0"),
    "iw-sft": ("iw-sft", "lag0"),
    "iw-sft-lagged": ("iw-sft", "periodic"),
    "iw-sft-ema": ("iw-sft", "ema"),
}


def train(method: str, data: torch.Tensor, cfg: ToyConfig) -> list[float]:
    """Train one method; returns p(right) before training and after each step."""
    spec_name, q_kind = METHODS[method]
    spec = preset(spec_name)
    torch.manual_seed(cfg.seed)
    policy = Bandit()
    ref_lp = Bandit()(data).detach()                  # pi_ref = the initial policy
    q_source = make_q_source(q_kind, policy, every=cfg.q_every, decay=cfg.q_ema_decay)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    mask = torch.ones(len(data), 1, dtype=torch.bool)
    curve = [p_right(policy)]
    for step in range(1, cfg.steps + 1):
        pol_lp = policy(data)
        q_lp = q_source.logprobs(pol_lp, lambda m: m(data))
        out = iw_objective(pol_lp, q_lp, ref_lp, mask, spec, batch_id=step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        q_source.update(policy, step)
        curve.append(p_right(policy))
    return curve


def p_right(policy: Bandit) -> float:
    return float(torch.softmax(policy.logits.detach(), -1)[RIGHT])


def run_toy(cfg: ToyConfig = ToyConfig()) -> dict:
    data = curated_dataset(cfg)
    n_right = int((data == RIGHT).sum())
    result = {
        "config": cfg.__dict__,
        "dataset": {"n_curated": len(data), "n_right": n_right, "n_left": len(data) - n_right},
        "expected": {"sft": 2 / 3, "iw-sft": 1.0},
        "methods": {},
    }
    for method, (spec_name, q_kind) in METHODS.items():
        curve = train(method, data, cfg)
        result["methods"][method] = {
            "weighting": spec_name,
            "q_source": q_kind,
            "p_right_final": curve[-1],
            "expected_reward_final": curve[-1] * 1.0 + (1 - curve[-1]) * 0.5,
            "curve": curve,
        }
    return result


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, m in result["methods"].items():
        ax.plot(m["curve"], label=f"{method} (final {m['p_right_final']:.3f})")
    ax.axhline(2 / 3, color="grey", ls=":", lw=1)
    ax.text(len(next(iter(result["methods"].values()))["curve"]) * 0.6, 2 / 3 - 0.035, "SFT optimum 2/3", color="grey", fontsize=8)
    ax.set_xlabel("training step")
    ax.set_ylabel("p(pull-right)")
    ax.set_ylim(0.45, 1.02)
    ax.set_title("Two-armed bandit: SFT vs iw-SFT on curated data (paper Fig. 1)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
