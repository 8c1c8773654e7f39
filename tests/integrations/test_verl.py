"""``entropy_lens.integrations.verl`` against verl itself, and against verl's published signatures.

With verl installed (tested with 0.9.1): the plugins are found through verl's own lookups
(``get_adv_estimator_fn`` / ``get_policy_loss_fn``, also after ``VERL_USE_EXTERNAL_MODULES`` in a fresh
interpreter), run inside verl's own ``compute_advantage`` (its source, executed as it is, on a real ``DataProto``),
return verl's shapes and dtypes, and equal the registered shaper applied directly to verl's GRPO advantages.

Without verl those tests are skipped; the module is then loaded against a stub ``core_algos`` written from the
published API (the registries, ``compute_grpo_outcome_advantage`` and ``compute_policy_loss_vanilla``'s
signatures, and the keywords ``compute_advantage`` / ``ppo_loss`` call them with), which runs either way.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import inspect
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from entropy_lens.errors import UserError
from entropy_lens.train.config import SHAPERS, ShapingConfig
from entropy_lens.train.core import group_advantages, relative_position

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "entropy_lens" / "integrations" / "verl.py"
HAVE_VERL = importlib.util.find_spec("verl") is not None
needs_verl = pytest.mark.skipif(not HAVE_VERL, reason="verl is not installed (pip install verl): tested against the "
                                                      "stub of its published signatures only")

# The keywords verl 0.9.1 calls custom estimators with (ray_trainer.compute_advantage, the non-GAE/GRPO branch) and
# policy losses with (workers/utils/losses.ppo_loss), and compute_policy_loss_vanilla's published parameters.
ESTIMATOR_KWARGS = ("token_level_rewards", "response_mask", "config", "index", "reward_baselines")
POLICY_LOSS_KWARGS = ("old_log_prob", "log_prob", "advantages", "response_mask", "loss_agg_mode", "config",
                      "rollout_is_weights")
VANILLA_PARAMS = list(POLICY_LOSS_KWARGS)


def batch(seed: int = 0, groups: int = 3, g: int = 4, t: int = 7):
    """A small verl-shaped batch: outcome rewards on the last response token, right-padded masks, uids."""
    gen = torch.Generator().manual_seed(seed)
    bs = groups * g
    lengths = torch.randint(1, t + 1, (bs,), generator=gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(torch.int64)
    scores = torch.randint(0, 2, (bs,), generator=gen).float() + 0.1 * torch.rand(bs, generator=gen)
    rewards = torch.zeros(bs, t)
    rewards[torch.arange(bs), lengths - 1] = scores
    old_logp = -torch.rand(bs, t, generator=gen) * 3 * mask
    uid = np.array([f"uid-{i // g}" for i in range(bs)], dtype=object)
    return rewards, mask, old_logp, uid


def expected(shaper: str, rewards, mask, uid, old_logp=None, cfg=None, grpo=None):
    """The registered shaper applied directly to GRPO advantages: ``grpo(rewards, mask, uid)`` [bs, T] when given
    (verl's own), else entropy-lens' :func:`group_advantages` broadcast over the response."""
    _, ids = np.unique(uid, return_inverse=True)
    ids = torch.as_tensor(ids)
    m = mask.float()
    adv = group_advantages(rewards.sum(-1), ids)[:, None] * m if grpo is None else grpo(rewards, mask, uid)
    logppl = None if old_logp is None else -(old_logp * m).sum(-1) / m.sum(-1).clamp(min=1)
    return SHAPERS.get(shaper)(adv, m, logppl=logppl, group_ids=ids, rel_pos=relative_position(m), entropy=None,
                               cfg=cfg or ShapingConfig())


def _group_mean(x, ids):
    out = torch.empty_like(x)
    for j in ids.unique():
        out[ids == j] = x[ids == j].mean() if (ids == j).sum() > 1 else 0.0
    return out


# ---------------------------------------------------------------------------------------------- the stub
def stub_core_algos() -> types.ModuleType:
    """verl.trainer.ppo.core_algos as published: registries, GRPO, and a vanilla loss that records its call."""
    ca = types.ModuleType("verl.trainer.ppo.core_algos")
    ca.ADV_ESTIMATOR_REGISTRY, ca.POLICY_LOSS_REGISTRY, ca.calls = {}, {}, []

    def register_adv_est(name):
        def deco(fn):
            if name in ca.ADV_ESTIMATOR_REGISTRY and ca.ADV_ESTIMATOR_REGISTRY[name] != fn:
                raise ValueError(f"Adv estimator {name} has already been registered")
            ca.ADV_ESTIMATOR_REGISTRY[name] = fn
            return fn
        return deco

    def register_policy_loss(name):
        def deco(fn):
            ca.POLICY_LOSS_REGISTRY[name] = fn
            return fn
        return deco

    def compute_grpo_outcome_advantage(token_level_rewards, response_mask, index, epsilon=1e-6,
                                       norm_adv_by_std_in_grpo=True, config=None):
        _, ids = np.unique(np.asarray(index), return_inverse=True)
        ids = torch.as_tensor(ids)
        s = token_level_rewards.sum(-1)
        a = group_advantages(s, ids, epsilon) if norm_adv_by_std_in_grpo else s - _group_mean(s, ids)
        a = a[:, None] * response_mask
        return a, a

    def compute_policy_loss_vanilla(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                                    config=None, rollout_is_weights=None):
        ca.calls.append(dict(advantages=advantages, loss_agg_mode=loss_agg_mode, config=config))
        m = response_mask.float()
        return -(torch.exp(log_prob - old_log_prob) * advantages * m).sum() / m.sum(), {"actor/pg_clipfrac": 0.0}

    ca.register_adv_est, ca.register_policy_loss = register_adv_est, register_policy_loss
    ca.get_adv_estimator_fn = lambda name: ca.ADV_ESTIMATOR_REGISTRY[name]
    ca.get_policy_loss_fn = lambda name: ca.POLICY_LOSS_REGISTRY[name]
    ca.compute_grpo_outcome_advantage = compute_grpo_outcome_advantage
    ca.compute_policy_loss_vanilla = compute_policy_loss_vanilla
    return ca


@pytest.fixture
def stubbed(monkeypatch):
    """Our module executed against the stub (under a private name: the real import is untouched)."""
    ca = stub_core_algos()
    for name in ("verl", "verl.trainer", "verl.trainer.ppo"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        monkeypatch.setitem(sys.modules, name, mod)
    sys.modules["verl.trainer.ppo"].core_algos = ca
    monkeypatch.setitem(sys.modules, "verl.trainer.ppo.core_algos", ca)
    spec = importlib.util.spec_from_file_location("_entropy_lens_verl_stubbed", MODULE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, ca


def test_import_without_verl_fails_with_one_line():
    code = "import sys; sys.modules['verl'] = None\nimport entropy_lens.integrations.verl\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last == "ImportError: entropy_lens.integrations.verl needs verl: pip install verl", r.stderr


def test_every_shaper_has_a_verl_plugin_or_a_reason(stubbed):
    mod, ca = stubbed
    covered = set(mod.ESTIMATORS.values()) | set(mod.POLICY_LOSSES.values()) | set(mod.NOT_IN_VERL)
    assert covered == set(SHAPERS.names())
    assert set(ca.ADV_ESTIMATOR_REGISTRY) == set(mod.ESTIMATORS)
    assert set(ca.POLICY_LOSS_REGISTRY) == set(mod.POLICY_LOSSES)


def test_signatures_take_the_keywords_verl_passes(stubbed):
    mod, ca = stubbed
    for name in mod.ESTIMATORS:
        inspect.signature(ca.get_adv_estimator_fn(name)).bind(**{k: None for k in ESTIMATOR_KWARGS})
    for name in mod.POLICY_LOSSES:
        params = list(inspect.signature(ca.get_policy_loss_fn(name)).parameters)
        assert params == VANILLA_PARAMS


@pytest.mark.parametrize("name", ["entropy_lens_position", "entropy_lens_position_begin", "entropy_lens_ppl",
                                  "entropy_lens_ppl_high"])
def test_stub_estimators_equal_the_shaper(stubbed, name):
    mod, ca = stubbed
    rewards, mask, old_logp, uid = batch()
    kw = {"old_log_probs": old_logp} if "ppl" in name else {}
    adv, ret = ca.get_adv_estimator_fn(name)(token_level_rewards=rewards, response_mask=mask, index=uid, config=None,
                                             **kw)
    want = expected(mod.ESTIMATORS[name], rewards, mask, uid, old_logp if kw else None)
    assert adv.shape == ret.shape == rewards.shape and adv.dtype == torch.float32
    torch.testing.assert_close(adv, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["entropy_lens_positive_only", "entropy_lens_negative_only"])
def test_stub_policy_losses_hand_vanilla_the_shaped_advantages(stubbed, name):
    mod, ca = stubbed
    rewards, mask, old_logp, uid = batch(1)
    adv = expected("none", rewards, mask, uid)
    logp = (old_logp + 0.05).requires_grad_()
    loss, metrics = ca.get_policy_loss_fn(name)(old_log_prob=old_logp, log_prob=logp, advantages=adv,
                                                response_mask=mask.bool(), loss_agg_mode="seq-mean-token-mean",
                                                config="CFG", rollout_is_weights=None)
    call = ca.calls[-1]
    want = SHAPERS.get(mod.POLICY_LOSSES[name])(adv, mask.float(), logppl=None, group_ids=None, rel_pos=None,
                                                 entropy=None, cfg=ShapingConfig())
    torch.testing.assert_close(call["advantages"], want)
    assert call["loss_agg_mode"] == "seq-mean-token-mean" and call["config"] == "CFG"
    assert 0 < metrics["entropy_lens/kept_token_frac"] < 1 and "actor/pg_clipfrac" in metrics
    loss.backward()
    assert logp.grad is not None


def test_shaping_config_from_the_verl_config(stubbed):
    mod, _ = stubbed
    assert mod.shaping_config({"entropy_lens": {"position_alpha": 0.2}}) == ShapingConfig(position_alpha=0.2)
    assert mod.shaping_config(None) == ShapingConfig()
    with pytest.raises(UserError, match="unknown key"):
        mod.shaping_config({"entropy_lens": {"alpha": 1}})


# ---------------------------------------------------------------------------------------------- verl itself
@pytest.fixture(scope="module")
def verl_mod():
    if not HAVE_VERL:
        pytest.skip("verl is not installed (pip install verl)")
    import entropy_lens.integrations.verl as mod
    return mod


def _verl_compute_advantage():
    """verl's own ``compute_advantage``, its source executed as it is (importing ``ray_trainer`` itself needs
    Ray's serving stack, fastapi, ..., which the verl extra here does not install)."""
    from typing import Optional

    from verl import DataProto
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.core_algos import AdvantageEstimator

    src_path = Path(importlib.util.find_spec("verl.trainer.ppo").submodule_search_locations[0]) / "ray_trainer.py"
    tree = ast.parse(src_path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "compute_advantage")
    ns = {"DataProto": DataProto, "AdvantageEstimator": AdvantageEstimator, "core_algos": core_algos,
          "Optional": Optional, "AlgoConfig": AlgoConfig, "torch": torch, "np": np,
          "compute_response_mask": lambda data: pytest.fail("response_mask is always given here")}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(src_path), "exec"), ns)
    return ns["compute_advantage"]


def _data(rewards, mask, old_logp, uid, with_old=True):
    from verl import DataProto
    tensors = {"token_level_rewards": rewards, "response_mask": mask}
    if with_old:
        tensors["old_log_probs"] = old_logp
    return DataProto.from_dict(tensors=tensors, non_tensors={"uid": uid})


def verl_grpo(rewards, mask, uid):
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
    return compute_grpo_outcome_advantage(rewards, mask, uid)[0]


@needs_verl
def test_verl_lookup_finds_ours(verl_mod):
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn
    for name in verl_mod.ESTIMATORS:
        assert get_adv_estimator_fn(name) is getattr(verl_mod, get_adv_estimator_fn(name).__name__)
        assert get_adv_estimator_fn(name).__module__ == "entropy_lens.integrations.verl"
    for name in verl_mod.POLICY_LOSSES:
        assert get_policy_loss_fn(name).__module__ == "entropy_lens.integrations.verl"
        assert list(inspect.signature(get_policy_loss_fn(name)).parameters) == list(
            inspect.signature(get_policy_loss_fn("vanilla")).parameters)


@needs_verl
def test_loaded_by_verl_use_external_modules():
    code = ("import verl\nfrom verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn\n"
            "print(get_adv_estimator_fn('entropy_lens_ppl').__module__, "
            "get_policy_loss_fn('entropy_lens_positive_only').__name__)\n")
    env = dict(os.environ, VERL_USE_EXTERNAL_MODULES="entropy_lens.integrations.verl", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["entropy_lens.integrations.verl", "positive_only_policy_loss"]


@needs_verl
@pytest.mark.parametrize("name", ["entropy_lens_position", "entropy_lens_position_begin", "entropy_lens_ppl",
                                  "entropy_lens_ppl_high"])
def test_through_verls_compute_advantage(verl_mod, name):
    compute_advantage = _verl_compute_advantage()
    rewards, mask, old_logp, uid = batch(2)
    data = compute_advantage(_data(rewards, mask, old_logp, uid), adv_estimator=name, config=None)
    adv, ret = data.batch["advantages"], data.batch["returns"]
    assert adv.shape == ret.shape == rewards.shape and adv.dtype == ret.dtype == torch.float32
    want = expected(verl_mod.ESTIMATORS[name], rewards, mask, uid, old_logp if "ppl" in name else None,
                    grpo=verl_grpo)
    torch.testing.assert_close(adv, want, rtol=0, atol=0)
    torch.testing.assert_close(ret, adv)
    assert (adv[mask == 0] == 0).all()


@needs_verl
def test_ppl_groups_are_whole_whatever_the_row_order(verl_mod):
    """The weight depends on the sample's group, not on where its rows sit (verl reorders rows by length)."""
    compute_advantage = _verl_compute_advantage()
    rewards, mask, old_logp, uid = batch(3)
    perm = torch.randperm(len(uid), generator=torch.Generator().manual_seed(0))
    a = compute_advantage(_data(rewards, mask, old_logp, uid), adv_estimator="entropy_lens_ppl").batch["advantages"]
    b = compute_advantage(_data(rewards[perm], mask[perm], old_logp[perm], uid[perm.numpy()]),
                          adv_estimator="entropy_lens_ppl").batch["advantages"]
    torch.testing.assert_close(b, a[perm], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(a, verl_grpo(rewards, mask, uid))  # the weight did act


@needs_verl
def test_ppl_without_old_log_probs_stops_with_one_line(verl_mod):
    compute_advantage = _verl_compute_advantage()
    rewards, mask, old_logp, uid = batch(4)
    with pytest.raises(UserError, match="needs the sampling policy's log-probs"):
        compute_advantage(_data(rewards, mask, old_logp, uid, with_old=False), adv_estimator="entropy_lens_ppl")


@needs_verl
def test_position_at_alpha_zero_is_verls_grpo_and_config_is_read(verl_mod):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
    compute_advantage = _verl_compute_advantage()
    rewards, mask, old_logp, uid = batch(5)
    for norm in (True, False):
        cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": norm, "entropy_lens": {"position_alpha": 0.0}})
        got = compute_advantage(_data(rewards, mask, old_logp, uid), adv_estimator="entropy_lens_position",
                                config=cfg).batch["advantages"]
        grpo, _ = compute_grpo_outcome_advantage(rewards, mask, uid, norm_adv_by_std_in_grpo=norm)
        torch.testing.assert_close(got, grpo)
    cfg = OmegaConf.create({"entropy_lens": {"position_alpha": 0.3, "position_k": 5}})
    got = compute_advantage(_data(rewards, mask, old_logp, uid), adv_estimator="entropy_lens_position",
                            config=cfg).batch["advantages"]
    want = expected("position", rewards, mask, uid, cfg=ShapingConfig(position_alpha=0.3, position_k=5),
                    grpo=verl_grpo)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@needs_verl
@pytest.mark.parametrize("name", ["entropy_lens_positive_only", "entropy_lens_negative_only"])
def test_policy_losses_through_verls_lookup(verl_mod, name):
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla, get_policy_loss_fn
    from verl.workers.config import ActorConfig
    config = ActorConfig(strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=2, clip_ratio_high=0.28)
    rewards, mask, old_logp, uid = batch(6)
    adv = verl_grpo(rewards, mask, uid)
    logp = (old_logp + 0.1 * torch.randn(old_logp.shape, generator=torch.Generator().manual_seed(1))) * mask
    kw = dict(old_log_prob=old_logp, response_mask=mask.bool(), loss_agg_mode="token-mean", config=config,
              rollout_is_weights=None)
    lp = logp.clone().requires_grad_()
    loss, metrics = get_policy_loss_fn(name)(log_prob=lp, advantages=adv, **kw)
    shaped = SHAPERS.get(verl_mod.POLICY_LOSSES[name])(adv, mask.float(), logppl=None, group_ids=None, rel_pos=None,
                                                        entropy=None, cfg=ShapingConfig())
    want, want_metrics = compute_policy_loss_vanilla(log_prob=logp, advantages=shaped, **kw)
    assert loss.shape == () and loss.dtype == torch.float32
    torch.testing.assert_close(loss, want)
    assert {k: v for k, v in metrics.items() if not k.startswith("entropy_lens/")} == want_metrics
    kept = (shaped != 0)[mask.bool()].float().mean().item()
    assert metrics["entropy_lens/kept_token_frac"] == pytest.approx(kept)
    loss.backward()
    assert torch.isfinite(lp.grad).all() and lp.grad[~mask.bool()].abs().sum() == 0


def test_the_readme_names_only_registered_plugins(stubbed):
    mod, _ = stubbed
    text = (ROOT / "README.md").read_text()
    section = text.split("## In your verl run", 1)[1].split("\n## ", 1)[0]
    import re
    names = set(re.findall(r"\bentropy_lens_\w+", section))
    assert names and names <= set(mod.ESTIMATORS) | set(mod.POLICY_LOSSES)
    fields_named = set(re.findall(r"\+algorithm\.entropy_lens\.(\w+)", section))
    assert fields_named <= set(ShapingConfig.__dataclass_fields__)
