"""`entropy-lens intervene` on tiny random Qwen2 checkpoints and a small collect store.

Checked against independent computations: the replacement token against a plain-torch forward, the chosen
positions against the stored entropies, the regeneration contexts against the stored responses.

The command runs through the CLI, which wires the analysis layer's site selection and summary into capture's
regeneration; :func:`run` calls the Python API the same way.
"""

from __future__ import annotations

from collections import Counter

import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch

import entropy_lens
from entropy_lens.analysis import interventions as ivs
from entropy_lens.capture import intervene as iv
from entropy_lens.capture.config import InterveneConfig
from entropy_lens.cli import main
from entropy_lens.errors import UserError
from tests.conftest import save_run

RUN = ["--continuations", "2", "--batch-size", "64", "--n-boot", "200"]
DETAIL_COLUMNS = ["step", "prompt_id", "sample_id", "position", "rel_position", "entropy", "original_id",
                  "original_token", "replacement_id", "replacement_token", "acc_before", "acc_after"]
EOS = 1  # build_char_tokenizer: <pad>=0, <eos>=1, <unk>=2


def run(cfg: InterveneConfig):
    return iv.intervene(cfg, select_sites=ivs.select_positions, summarize=ivs.summarize, groups=ivs.GROUPS)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("iv")
    ckpts = save_run(root / "ckpts", tiny_tokenizer, "step", steps=(0, 10))
    assert main(["collect", str(ckpts), "--out", str(root / "sweep"), "--max-prompts", "4", "--samples-per-prompt",
                 "4", "--max-new-tokens", "16", "--batch-size", "16", "--no-updates"]) == 0
    return root / "sweep"


@pytest.fixture(scope="module")
def result(store):
    out = store.parent / "out" / "interventions.parquet"
    assert main(["intervene", str(store), "--out", str(out), *RUN]) == 0
    return pl.read_parquet(out), pl.read_parquet(out.with_name("interventions_detail.parquet"))


def step_tables(store, step=10):
    s = entropy_lens.open(store)
    return (s.tokens.filter(pl.col("step") == step).sort("prompt_id", "sample_id", "position").collect(),
            s.samples.filter(pl.col("step") == step).sort("prompt_id", "sample_id").collect())


def prompt_of(samples, r) -> str:
    return samples.filter((pl.col("prompt_id") == r["prompt_id"]) & (pl.col("sample_id") == r["sample_id"]))["prompt"][0]


def response_ids(tokens, pid, sid) -> list[int]:
    return tokens.filter((pl.col("prompt_id") == pid) & (pl.col("sample_id") == sid))["token_id"].to_list()


def test_tables_have_the_schema(result, store):
    summary, detail = result
    assert summary.columns == ivs.SUMMARY_COLUMNS
    assert summary.schema["n"] == pl.Int64 and all(summary.schema[c] == pl.Float64 for c in ivs.SUMMARY_COLUMNS[3:])
    assert set(zip(summary["kind"], summary["group"])) <= {("ppl", "low-ppl"), ("ppl", "high-ppl"),
                                                           ("position", "begin"), ("position", "end")}
    assert {"begin", "end"} <= set(summary["group"]) and summary.filter(pl.col("kind") == "ppl").height >= 1
    assert all(c in detail.columns for c in DETAIL_COLUMNS)
    assert (detail["step"] == 10).all()  # the last completed step by default
    for r in summary.iter_rows(named=True):
        d = detail.filter((pl.col("kind") == r["kind"]) & (pl.col("group") == r["group"]))
        assert r["n"] == d.height
        assert r["accuracy_before"] == pytest.approx(d["acc_before"].mean())
        assert r["accuracy_after"] == pytest.approx(d["acc_after"].mean())
        assert r["delta_accuracy"] == pytest.approx(r["accuracy_after"] - r["accuracy_before"])
        assert r["ci_low"] <= r["delta_accuracy"] + 1e-12 and r["delta_accuracy"] <= r["ci_high"] + 1e-12
    acc = detail["acc_before"].to_numpy()
    assert np.all(np.isin(acc * 2, [0, 1, 2]))  # fractions of 2 continuations
    # The consumers read it: the report's reader and findings H / K.
    from entropy_lens.analysis.context import read_interventions
    from entropy_lens.analysis.findings import finding_H, finding_K

    table = read_interventions(store.parent / "out" / "interventions.parquet")
    assert finding_K(table).key == "K" and finding_H(table).key == "H"


def test_replacement_is_the_best_other_token_under_plain_torch(result, store, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    _, detail = result
    tokens, samples = step_tables(store)
    model = AutoModelForCausalLM.from_pretrained(store.parent / "ckpts" / "step_10").eval()
    rows = detail.unique(["prompt_id", "sample_id", "position"]).iter_rows(named=True)
    for r in rows:
        prompt = prompt_of(samples, r)
        p = tiny_tokenizer(prompt)["input_ids"]
        resp = response_ids(tokens, r["prompt_id"], r["sample_id"])
        assert resp[r["position"]] == r["original_id"]
        with torch.no_grad():
            logits = model(torch.tensor([p + resp])).logits[0, len(p) - 1 + r["position"]].double()
        logp = torch.log_softmax(logits, -1)
        assert r["original_logprob"] == pytest.approx(float(logp[r["original_id"]]), abs=1e-4)
        logits[r["original_id"]] = float("-inf")
        assert r["replacement_id"] == int(logits.argmax())
        assert r["replacement_id"] != r["original_id"]
        assert r["replacement_token"] == tiny_tokenizer.decode([r["replacement_id"]])


def _best(cands: pl.DataFrame) -> int | None:
    if cands.height == 0:
        return None
    top = cands["entropy"].max()
    return int(cands.filter(pl.col("entropy") == top)["position"].min())


def test_positions_are_the_top_entropy_ones_in_their_region(result, store):
    from entropy_lens.analysis.instance import ppl_buckets

    _, detail = result
    tokens, samples = step_tables(store)
    buckets = {(r["prompt_id"], r["sample_id"]): r["ppl_bucket"]
               for r in ppl_buckets(samples=samples).iter_rows(named=True)}
    checked = 0
    for s in samples.iter_rows(named=True):
        key = (s["prompt_id"], s["sample_id"])
        t = tokens.filter((pl.col("prompt_id") == key[0]) & (pl.col("sample_id") == key[1])
                          & (pl.col("token_id") != EOS))
        rel = pl.col("position") / s["length"]
        want = {("position", "begin"): _best(t.filter(rel < 0.1)), ("position", "end"): _best(t.filter(rel >= 0.9))}
        if buckets[key] in ("low", "high"):
            want[("ppl", f"{buckets[key]}-ppl")] = _best(t)
        got = {(r["kind"], r["group"]): r["position"] for r in
               detail.filter((pl.col("prompt_id") == key[0]) & (pl.col("sample_id") == key[1])).iter_rows(named=True)}
        assert got == {k: v for k, v in want.items() if v is not None}, key
        checked += len(got)
    assert checked == detail.height


def test_end_never_takes_the_final_eos():
    # Synthetic: the EOS at the end has the highest entropy of the response; "end" must pass over it.
    n = 20
    tokens = pl.DataFrame({"step": [0] * n, "prompt_id": [0] * n, "sample_id": [0] * n, "position": list(range(n)),
                           "token_id": [5] * (n - 1) + [EOS], "entropy": [0.1] * (n - 2) + [0.5, 9.0],
                           "logprob": [-1.0] * n}, schema_overrides={"entropy": pl.Float32})
    samples = pl.DataFrame({"step": [0], "prompt_id": [0], "sample_id": [0], "length": [n], "logppl": [1.0]})
    sites = ivs.select_positions(tokens, samples, kinds=["position"], k=3, eos_ids=[EOS])
    end = sites.filter(pl.col("group") == "end")
    assert end["position"].to_list() == [18]  # 18 and 19 are in the last 10 %, 19 is the EOS
    assert sites.filter(pl.col("group") == "begin")["position"].to_list() == [0, 1]  # top-3 of a 2-token region


def test_no_eos_intervened_on_in_the_run(result, store):
    _, detail = result
    _, samples = step_tables(store)
    assert (detail["original_id"] != EOS).all()
    end = detail.filter(pl.col("group") == "end").join(samples.select("prompt_id", "sample_id", "truncated"),
                                                       on=["prompt_id", "sample_id"])
    assert end.filter(~pl.col("truncated") & (pl.col("position") == pl.col("length") - 1)).height == 0
    assert (end["rel_position"] >= 0.9).all()
    assert (detail.filter(pl.col("group") == "begin")["rel_position"] < 0.1).all()


def test_deterministic_with_the_seed(result, store, tmp_path):
    _, detail = result
    out = tmp_path / "again.parquet"
    assert main(["intervene", str(store), "--out", str(out), *RUN]) == 0
    again = pl.read_parquet(tmp_path / "again_detail.parquet")
    assert again.drop("checkpoint").equals(detail.drop("checkpoint"))
    assert pl.read_parquet(out).equals(result[0])
    assert main(["intervene", str(store), "--out", str(tmp_path / "other.parquet"), *RUN, "--seed", "1"]) == 0
    other = pl.read_parquet(tmp_path / "other_detail.parquet")
    assert other["text_after"].to_list() != detail["text_after"].to_list()


def test_both_arms_regenerate_from_the_shared_prefix(store, tmp_path, monkeypatch, tiny_tokenizer):
    seen = []
    real = iv.SAMPLERS.get("hf")()

    def record(model, tokenizer, prompt_ids, params, *, batch_seeds, batch_size):
        seen.extend(list(map(list, prompt_ids)))
        return real(model, tokenizer, prompt_ids, params, batch_seeds=batch_seeds, batch_size=batch_size)

    class Samplers:
        @staticmethod
        def get(name):
            return lambda options: record

    monkeypatch.setattr(iv, "SAMPLERS", Samplers)
    res = run(InterveneConfig(store=str(store), out=str(tmp_path / "x.parquet"), kinds="position",
                              continuations=3, max_samples=4, batch_size=64, n_boot=50))
    tokens, samples = step_tables(store)
    expected = Counter()  # prefix -> continuations it should have been sampled for (rows may share a prefix)
    for r in res.detail.iter_rows(named=True):
        prompt = prompt_of(samples, r)
        p = tiny_tokenizer(prompt)["input_ids"]
        resp = response_ids(tokens, r["prompt_id"], r["sample_id"])
        t = r["position"]
        before, after = tuple(p + resp[: t + 1]), tuple(p + resp[:t] + [r["replacement_id"]])
        if 16 - (t + 1) > 0:  # budget left: both arms were sampled (3 each), from the same prefix
            expected[before] += 3
            expected[after] += 0 if r["replacement_id"] == EOS else 3
        assert r["text_before"].startswith(tiny_tokenizer.decode(resp[: t + 1], skip_special_tokens=True))
        swapped = resp[:t] + [r["replacement_id"]]
        assert r["text_after"].startswith(tiny_tokenizer.decode(swapped, skip_special_tokens=True))
    counts = Counter(map(tuple, seen))
    assert expected and all(counts[prefix] == n for prefix, n in expected.items())
    # --max-samples 4: the first four responses in (prompt_id, sample_id) order
    assert set(res.detail.select("prompt_id", "sample_id").rows()) <= {(0, 0), (0, 1), (0, 2), (0, 3)}


def test_cluster_bootstrap_reduces_to_the_plain_one():
    from entropy_lens.analysis.stats import bootstrap_ci

    rng = np.random.default_rng(0)
    d = rng.normal(size=30)
    assert ivs._cluster_ci(d, np.arange(30), 300, 3) == bootstrap_ci(d, n_boot=300, seed=3)
    est = ivs._cluster_ci(d, np.repeat(np.arange(10), 3), 300, 3)
    assert est.estimate == pytest.approx(d.mean()) and est.n == 10 and est.ci_low < est.estimate < est.ci_high


def _err(capsys, *args) -> tuple[int, str]:
    code = main(["intervene", *map(str, args)])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("extra, needle", [
    (["--kinds", "ppl,bogus"], "--kinds"),
    (["--step", "7"], "--step 7"),
    (["--edge", "0.7"], "--edge"),
    (["--continuations", "0"], "--continuations"),
    (["--dataset", "arithh"], "unknown task 'arithh'"),
    (["--checkpoint", "/nonexistent/ckpt"], "--checkpoint"),
    (["--temperature", "0"], "--temperature"),
])
def test_bad_input_exits_2_with_one_line(store, tmp_path, capsys, extra, needle):
    out = tmp_path / "o.parquet"
    code, err = _err(capsys, store, "--out", out, *extra)
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_bad_store_and_missing_checkpoint(store, tmp_path, capsys):
    code, err = _err(capsys, tmp_path / "nowhere")
    assert code == 2 and "no such directory" in err and len(err.splitlines()) == 1
    bare = tmp_path / "bare"
    shutil.copytree(store, bare, ignore=shutil.ignore_patterns("interventions*"))
    m = json.loads((bare / "lens.json").read_text())
    m.pop("info", None)
    (bare / "lens.json").write_text(json.dumps(m))
    code, err = _err(capsys, bare)
    assert code == 2 and "--checkpoint" in err and len(err.splitlines()) == 1, err
    assert not (bare / "interventions.parquet").exists()
    code, err = _err(capsys, store, "--out", tmp_path)
    assert code == 2 and "--out" in err
