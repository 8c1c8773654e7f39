"""The paper's shapers as verl plugins: registered advantage estimators and policy losses.

    VERL_USE_EXTERNAL_MODULES=entropy_lens.integrations.verl python -m verl.trainer.main_ppo \\
        algorithm.adv_estimator=entropy_lens_position ...            # or _position_begin, _ppl, _ppl_high
        actor_rollout_ref.actor.policy_loss.loss_mode=entropy_lens_positive_only   # optional: or _negative_only

``import verl`` imports every module named in ``VERL_USE_EXTERNAL_MODULES`` (``verl/__init__.py``), in the driver
and in every Ray worker, so importing this module is what registers the names below in verl's own registries
(``core_algos.register_adv_est`` / ``register_policy_loss``; found by ``get_adv_estimator_fn`` /
``get_policy_loss_fn``).  Tested against verl 0.9.1.  Each function is a thin adapter: verl's tensors in, the
registered entropy-lens shaper (:data:`entropy_lens.train.config.SHAPERS`, one implementation of each formula)
applied, verl's shapes and dtypes out.

**Advantage estimators** (run on the driver, inside verl's ``compute_advantage``, which calls them with
``token_level_rewards`` [bs, T], ``response_mask`` [bs, T], ``index`` [bs] (the ``uid`` of each sample's GRPO
group) and ``config`` = ``algorithm``; they return ``(advantages, returns)``, both [bs, T], as verl's GRPO does):

=============================  ==================  ==========================================================
verl name                      shaper              Ã
=============================  ==================  ==========================================================
``entropy_lens_position``      ``position``        A + sign(A)·min(α·σ(k(r − ½)), cap·|A|)
``entropy_lens_position_begin`` ``position-begin`` A + sign(A)·min(α·σ(k(½ − r)), cap·|A|)
``entropy_lens_ppl``           ``ppl``             A·clamp(1 − α·w_ppl, ppl_min, ppl_max)
``entropy_lens_ppl_high``      ``ppl-high``        A·clamp(1 + α·w_ppl, ppl_min, ppl_max)
=============================  ==================  ==========================================================

A is verl's own GRPO outcome advantage (``core_algos.compute_grpo_outcome_advantage``, with
``algorithm.norm_adv_by_std_in_grpo``, which verl does not pass to custom estimators, read from ``config``),
r = position / length over ``response_mask`` (:func:`entropy_lens.train.core.relative_position`).  The shapers'
hyper-parameters are :class:`entropy_lens.train.config.ShapingConfig`'s fields, paper defaults unless the verl
config has them under ``algorithm.entropy_lens`` (``+algorithm.entropy_lens.position_alpha=0.2``).

**PPL: the route.**  w_ppl standardises each sample's log-PPL = −mean_t log π_old(o_t) within its GRPO group,
so it needs the sampling policy's log-probs *and* the group ids together.  verl has both only on the driver, in
``compute_advantage``'s ``data`` (``data.batch["old_log_probs"]``, ``data.non_tensor_batch["uid"]``), and passes
``old_log_probs`` to no custom estimator (only to its own optimal-token-baseline ones).  A registered policy loss
is not a way round it: it sees one micro-batch's ``old_log_prob`` and ``advantages`` and no ``uid``, and the
groups are split over micro-batches and data-parallel ranks (``trainer.balance_batch`` and dynamic batch sizes
reorder the rows by length), so a per-group z-score there would be a different, batch-dependent formula.  The
``ppl`` estimators therefore take ``old_log_probs`` as an argument when verl passes one and otherwise read it from
the ``data`` of the ``compute_advantage`` that called them (one look up the call stack, checked to be the same
batch: its ``response_mask`` equals the one passed).  Cost: nothing extra — no forward (verl computed
``old_log_probs`` before the advantages, in legacy and ``use_v1`` trainers alike; in rollout-correction bypass
mode they are the rollout's log-probs), one O(bs·T) pass plus a per-group loop on the driver.  Limits: it relies
on a verl internal (the caller's local named ``data``), pinned by a test that runs verl's own
``compute_advantage`` source; where it is not found the estimator stops with one line, never a silent fallback.
Groups are whole (the driver holds the whole training batch), so the PPL weight is exactly the shaper's.

**Policy losses** (run in every actor worker, per micro-batch, called with verl's keywords ``old_log_prob``,
``log_prob``, ``advantages``, ``response_mask`` [bs, T], ``loss_agg_mode``, ``config`` (the actor config) and
``rollout_is_weights``; they return ``(loss, metrics)``): the sample-sign peers, shaped per token and then handed
to verl's own clipped surrogate ``compute_policy_loss_vanilla`` (its clip-higher, dual clip, ``loss_agg_mode``
and global-batch normalisation unchanged).  They compose with any estimator (e.g. ``entropy_lens_position``).

=================================  =================  ====================
``entropy_lens_positive_only``     ``positive-only``  Ã = A · 1[A > 0]
``entropy_lens_negative_only``     ``negative-only``  Ã = A · 1[A < 0]
=================================  =================  ====================

**Not provided** (:data:`NOT_IN_VERL`): ``entropy-top`` (80/20) ranks tokens by the rollout policy's *entropy*,
which verl hands neither to estimators nor to policy losses (the trainer pops ``entropys`` after logging their
mean; ``ppo_loss`` keeps the actor's entropy for the entropy bonus), so it cannot be the registered shaper here;
ranking by −log π_old instead would be another method.  ``none`` is verl's ``grpo``.

Importing this module without verl installed fails with one line saying ``pip install verl``.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import fields
from typing import Any

if importlib.util.find_spec("verl") is None:
    raise ImportError("entropy_lens.integrations.verl needs verl: pip install verl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

from entropy_lens.errors import UserError  # noqa: E402
from entropy_lens.train.config import SHAPERS, ShapingConfig  # noqa: E402
from entropy_lens.train.core import relative_position  # noqa: E402

__all__ = ["ESTIMATORS", "POLICY_LOSSES", "NOT_IN_VERL", "position_advantage", "position_begin_advantage",
           "ppl_advantage", "ppl_high_advantage", "positive_only_policy_loss", "negative_only_policy_loss",
           "sequence_logppl", "shaping_config"]

#: verl advantage-estimator name → entropy-lens shaper.
ESTIMATORS = {"entropy_lens_position": "position", "entropy_lens_position_begin": "position-begin",
              "entropy_lens_ppl": "ppl", "entropy_lens_ppl_high": "ppl-high"}
#: verl policy-loss name (``actor.policy_loss.loss_mode``) → entropy-lens shaper.
POLICY_LOSSES = {"entropy_lens_positive_only": "positive-only", "entropy_lens_negative_only": "negative-only"}
#: Registered shapers with no verl plugin, and why (module docstring).
NOT_IN_VERL = {"none": "plain GRPO is verl's own algorithm.adv_estimator=grpo",
               "entropy-top": "verl passes the rollout entropy to no estimator and no policy loss"}
CONFIG_KEY = "entropy_lens"  # algorithm.entropy_lens: the shapers' hyper-parameters
MISSING_OLD_LOG_PROBS = ("entropy_lens_ppl needs the sampling policy's log-probs: verl passed no old_log_probs and "
                         "the calling compute_advantage has no data.batch['old_log_probs'] for this batch (a verl "
                         "version whose compute_advantage differs from 0.9.1's?)")


# ---------------------------------------------------------------------------------------------- helpers
def shaping_config(config: Any = None) -> ShapingConfig:
    """The shapers' hyper-parameters: :class:`ShapingConfig` with ``config.entropy_lens`` (a mapping) applied."""
    sub = None if config is None else config.get(CONFIG_KEY, None)
    if not sub:
        return ShapingConfig()
    known = {f.name for f in fields(ShapingConfig)}
    given = {str(k): v for k, v in sub.items()}
    bad = sorted(set(given) - known)
    if bad:
        raise UserError(f"algorithm.{CONFIG_KEY}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    return ShapingConfig(**{k: float(v) for k, v in given.items()})


def _group_ids(index: Any, device: torch.device) -> torch.Tensor:
    """verl's ``index`` [bs] (uids: strings, ints, any hashable) → dense group ids 0..G−1 [bs] int64."""
    _, inv = np.unique(np.asarray(index), return_inverse=True)
    return torch.as_tensor(inv.reshape(-1), dtype=torch.int64, device=device)


def sequence_logppl(old_log_probs: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """log-PPL_i = −Σ_t m_{i,t}·log π_old(o_{i,t}) / max(Σ_t m_{i,t}, 1): [bs, T], [bs, T] → [bs] float32 (as the
    embedded trainer computes it)."""
    m = response_mask.to(torch.float32)
    return -(old_log_probs.to(torch.float32) * m).sum(-1) / m.sum(-1).clamp(min=1)


def _grpo(token_level_rewards, response_mask, index, epsilon, norm_adv_by_std_in_grpo, config) -> torch.Tensor:
    """verl's GRPO outcome advantage [bs, T] (= (R − mean_g R)/(std_g R + ε) on the response, 0 elsewhere)."""
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = True if config is None else bool(config.get("norm_adv_by_std_in_grpo", True))
    adv, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=token_level_rewards, response_mask=response_mask, index=index, epsilon=epsilon,
        norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo)
    return adv


def _shape(shaper: str, advantages, response_mask, *, index=None, logppl=None, config=None) -> torch.Tensor:
    """The registered shaper on verl's [bs, T] advantages; arguments it does not need are None (so a shaper that
    read one would fail loudly rather than see a placeholder)."""
    mask = response_mask.to(advantages.dtype)
    group_ids = None if index is None else _group_ids(index, advantages.device)
    out = SHAPERS.get(shaper)(advantages, mask, logppl=logppl, group_ids=group_ids,
                              rel_pos=relative_position(mask).to(advantages.dtype), entropy=None,
                              cfg=shaping_config(config))
    return out.detach()


def _old_log_probs_from_caller(response_mask: torch.Tensor) -> torch.Tensor:
    """``data.batch["old_log_probs"]`` of the ``compute_advantage`` up the stack whose batch is this one."""
    frame = inspect.currentframe()
    try:
        f = frame.f_back
        for _ in range(8):
            if f is None:
                break
            batch = getattr(f.f_locals.get("data"), "batch", None)
            if batch is not None and "old_log_probs" in batch.keys() and "response_mask" in batch.keys():
                mine = batch["response_mask"]
                if mine.shape == response_mask.shape and torch.equal(mine.to(torch.bool), response_mask.to(torch.bool)):
                    return batch["old_log_probs"]
            f = f.f_back
    finally:
        del frame
    raise UserError(MISSING_OLD_LOG_PROBS)


# ---------------------------------------------------------------------------------------------- estimators
def position_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: np.ndarray,
                       epsilon: float = 1e-6, norm_adv_by_std_in_grpo: bool | None = None, config: Any = None,
                       **unused: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO+POSITION (verl ``entropy_lens_position``): [bs, T] rewards, mask, [bs] uids → (Ã, Ã), [bs, T] each.

        A = verl GRPO outcome advantage,  r = relative position over response_mask,
        Ã_{i,t} = A_{i,t} + sign(A_{i,t})·min(α·σ(k·(r_{i,t} − ½)), cap·|A_{i,t}|)   (0 off the response)

    The shaper ``position`` of :mod:`entropy_lens.train.shaping`; ``unused``: verl's other optional keywords
    (``reward_baselines``)."""
    adv = _grpo(token_level_rewards, response_mask, index, epsilon, norm_adv_by_std_in_grpo, config)
    shaped = _shape("position", adv, response_mask, config=config)
    return shaped, shaped


def position_begin_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: np.ndarray,
                             epsilon: float = 1e-6, norm_adv_by_std_in_grpo: bool | None = None, config: Any = None,
                             **unused: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The begin ablation (verl ``entropy_lens_position_begin``): as :func:`position_advantage` with the bonus on
    early tokens, b = min(α·σ(k·(½ − r)), cap·|A|); shaper ``position-begin``.  [bs, T] → ([bs, T], [bs, T])."""
    adv = _grpo(token_level_rewards, response_mask, index, epsilon, norm_adv_by_std_in_grpo, config)
    shaped = _shape("position-begin", adv, response_mask, config=config)
    return shaped, shaped


def _ppl(shaper, token_level_rewards, response_mask, index, old_log_probs, epsilon, norm, config):
    if old_log_probs is None:
        old_log_probs = _old_log_probs_from_caller(response_mask)
    if old_log_probs.shape != response_mask.shape:
        raise UserError(f"{shaper}: old_log_probs {tuple(old_log_probs.shape)} and response_mask "
                        f"{tuple(response_mask.shape)} differ in shape")
    adv = _grpo(token_level_rewards, response_mask, index, epsilon, norm, config)
    logppl = sequence_logppl(old_log_probs, response_mask)
    shaped = _shape(shaper, adv, response_mask, index=index, logppl=logppl, config=config)
    return shaped, shaped


def ppl_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: np.ndarray,
                  old_log_probs: torch.Tensor | None = None, epsilon: float = 1e-6,
                  norm_adv_by_std_in_grpo: bool | None = None, config: Any = None,
                  **unused: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO+PPL (verl ``entropy_lens_ppl``): [bs, T] rewards, mask, [bs] uids (+ [bs, T] old log-probs) → (Ã, Ã).

        logPPL_i = −Σ_t m·log π_old / Σ_t m,   w_i = logPPL_i standardised within i's group (IQR inliers),
        Ã_{i,t} = A_{i,t}·clamp(1 − α·w_i, ppl_min, ppl_max)

    ``old_log_probs`` default: the calling ``compute_advantage``'s ``data.batch["old_log_probs"]`` (module
    docstring, "PPL: the route").  Shaper ``ppl``."""
    return _ppl("ppl", token_level_rewards, response_mask, index, old_log_probs, epsilon, norm_adv_by_std_in_grpo,
                config)


def ppl_high_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: np.ndarray,
                       old_log_probs: torch.Tensor | None = None, epsilon: float = 1e-6,
                       norm_adv_by_std_in_grpo: bool | None = None, config: Any = None,
                       **unused: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The high-PPL ablation (verl ``entropy_lens_ppl_high``): Ã = A·clamp(1 + α·w_ppl, ppl_min, ppl_max), as
    :func:`ppl_advantage` otherwise; shaper ``ppl-high``."""
    return _ppl("ppl-high", token_level_rewards, response_mask, index, old_log_probs, epsilon,
                norm_adv_by_std_in_grpo, config)


# ---------------------------------------------------------------------------------------------- policy losses
def _vanilla_on_shaped(shaper, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                       rollout_is_weights):
    shaped = _shape(shaper, advantages, response_mask)
    loss, metrics = core_algos.compute_policy_loss_vanilla(
        old_log_prob=old_log_prob, log_prob=log_prob, advantages=shaped, response_mask=response_mask,
        loss_agg_mode=loss_agg_mode, config=config, rollout_is_weights=rollout_is_weights)
    m = response_mask.to(torch.float32)
    metrics["entropy_lens/kept_token_frac"] = float(((shaped != 0).float() * m).sum() / m.sum().clamp(min=1))
    return loss, metrics


def positive_only_policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                              response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config: Any = None,
                              rollout_is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Positive samples only (verl ``entropy_lens_positive_only``): [bs, T] each → (scalar loss, metrics).

        Ã = A·1[A > 0],   loss = verl compute_policy_loss_vanilla(old_log_prob, log_prob, Ã, response_mask, ...)

    The aggregation still counts every token (``loss_agg_mode``), so the kept tokens' weight is unchanged.  Adds
    the metric ``entropy_lens/kept_token_frac`` (share of response tokens with Ã ≠ 0).  Shaper ``positive-only``."""
    return _vanilla_on_shaped("positive-only", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                              config, rollout_is_weights)


def negative_only_policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                              response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config: Any = None,
                              rollout_is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Negative samples only (verl ``entropy_lens_negative_only``): Ã = A·1[A < 0], then verl's vanilla clipped
    surrogate, as :func:`positive_only_policy_loss`.  Shaper ``negative-only``."""
    return _vanilla_on_shaped("negative-only", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                              config, rollout_is_weights)


# ---------------------------------------------------------------------------------------------- registration
_ESTIMATOR_FNS = {"entropy_lens_position": position_advantage, "entropy_lens_position_begin": position_begin_advantage,
                  "entropy_lens_ppl": ppl_advantage, "entropy_lens_ppl_high": ppl_high_advantage}
_POLICY_LOSS_FNS = {"entropy_lens_positive_only": positive_only_policy_loss,
                    "entropy_lens_negative_only": negative_only_policy_loss}


def _register(registry: dict, register, name: str, fn) -> None:
    old = registry.get(name)
    if old is not None and getattr(old, "__module__", None) == fn.__module__:
        del registry[name]  # this module imported again (a reload): replace our own entry, never verl's
    register(name)(fn)


for _name, _fn in _ESTIMATOR_FNS.items():
    _register(getattr(core_algos, "ADV_ESTIMATOR_REGISTRY", {}), core_algos.register_adv_est, _name, _fn)
for _name, _fn in _POLICY_LOSS_FNS.items():
    _register(getattr(core_algos, "POLICY_LOSS_REGISTRY", {}), core_algos.register_policy_loss, _name, _fn)
