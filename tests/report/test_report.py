"""build_report, the report CLI, the figure scripts and FINDINGS.md on small hand-built stores."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest

from entropy_lens.analysis.findings import AGREES, CLAIMS, DISAGREES, NOT_MEASURED
from entropy_lens.analysis.stages import DEFAULT_DETECTOR
from entropy_lens.report.build import build_report
from entropy_lens.store import StoreWriter

VOCAB = ["3", "=", " so", " wait", " the", "x", "\\frac", " erot", "7", " then"]


def write_store(root: Path, *, kind: str = "sweep", n_steps: int = 10, updates: bool = True, steps_table: bool = False,
                vocab: bool = True, advantage: bool = False, entropy_offset: float = 0.0, seed: int = 0) -> Path:
    """A real store: entropy falls then flattens (knee near step 3), negatives' entropy is higher, accuracy
    rises; with ``updates`` each step is scored under the next one; a train store gets ``steps.parquet``."""
    rng = np.random.default_rng(seed)
    n_prompts, group, L = 4, 4, 12
    log = []
    with StoreWriter(root, kind=kind, settings={"test": kind, "seed": seed}) as w:
        for step in range(n_steps):
            level = 0.4 + 2.0 * math.exp(-step / 1.5) + entropy_offset
            acc = 0.2 + 0.6 * (1 - math.exp(-step / 2.0))
            tok, smp, upd = {k: [] for k in ("step", "prompt_id", "sample_id", "position", "rel_position", "token_id",
                                             "logprob", "entropy", "sum_p2", "sum_p2_logp", "advantage",
                                             "shaped_advantage")}, [], []
            for p in range(n_prompts):
                correct = rng.random(group) < acc
                for s in range(group):
                    ok = bool(correct[s])
                    ent = np.clip(level * (0.7 if ok else 1.3) + rng.normal(0, 0.1, L), 0.01, None)
                    ent[0] += 0.5
                    ent[-1] += 0.5  # U-shape
                    probs = np.clip(np.exp(-ent) + rng.uniform(0, 0.1, L), 0.02, 0.98)
                    ids = rng.integers(0, len(VOCAB), L)
                    a = (1.0 if ok else -1.0) if correct.any() and not correct.all() else 0.0
                    for t in range(L):
                        tok["step"].append(step); tok["prompt_id"].append(p); tok["sample_id"].append(s)
                        tok["position"].append(t); tok["rel_position"].append(t / L); tok["token_id"].append(int(ids[t]))
                        tok["logprob"].append(float(np.log(probs[t]))); tok["entropy"].append(float(ent[t]))
                        # the target at probs[t] and four others sharing the rest equally
                        rest = (1 - probs[t]) / 4
                        tok["sum_p2"].append(float(probs[t] ** 2 + 4 * rest**2))
                        tok["sum_p2_logp"].append(float(probs[t] ** 2 * np.log(probs[t]) + 4 * rest**2 * np.log(rest)))
                        tok["advantage"].append(a if advantage else None)
                        tok["shaped_advantage"].append(a * 1.1 if advantage else None)
                        # big moves on high-entropy tokens, up in positives and down in negatives
                        move = (0.3 if ent[t] > level else 0.0005) * (1 if ok else -1) * rng.uniform(0.5, 1)
                        pn = float(np.clip(probs[t] + move, 1e-4, 0.9999))
                        upd.append(dict(step=step, next_step=step + 1, prompt_id=p, sample_id=s, position=t,
                                        logprob_next=float(np.log(pn)),
                                        entropy_next=float(ent[t] - 0.5 * move)))
                    early_defect = step < 3 and s == 3
                    smp.append(dict(step=step, prompt_id=p, sample_id=s, length=L, truncated=early_defect,
                                    prompt=f"q{p}", text="答 a a a" if early_defect else f"so x = \\boxed{{{p}}}",
                                    answer=str(p) if ok else "0", gold=str(p), format_ok=not early_defect, correct=ok,
                                    reward=1.0 if ok else -1.0, logppl=float(-np.mean(np.log(probs))),
                                    mean_entropy=float(ent.mean()), source=kind))
            w.write_step(step, tokens=tok, samples={k: [r[k] for r in smp] for k in smp[0]})
            if updates and step < n_steps - 1:
                w.write_step(step, updates={k: [r[k] for r in upd] for k in upd[0]})
            ent_all = np.array(tok["entropy"])
            log.append(dict(step=step, entropy=float(ent_all.mean()), accuracy=acc,
                            eval_accuracy=acc if step % 2 == 0 else None, response_length=float(L + step),
                            entropy_pos=level * 0.7, entropy_neg=level * 1.3))
        if vocab:
            w.write_table("vocab", {"token_id": list(range(len(VOCAB))), "token": VOCAB})
        if steps_table:
            w.write_table("steps", pl.DataFrame(log))
    return root


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def run_layout(tmp_path_factory) -> Path:
    """RUN/baseline (train), RUN/baseline/sweep (collect, with updates), RUN/ppl (train), interventions (ppl only)."""
    run = tmp_path_factory.mktemp("run")
    write_store(run / "baseline", kind="train", updates=False, steps_table=True, advantage=True)
    write_store(run / "baseline" / "sweep", kind="sweep", updates=True, seed=1)
    write_store(run / "ppl", kind="train", updates=False, steps_table=True, advantage=True, entropy_offset=0.2, seed=2)
    pl.DataFrame(dict(kind=["ppl", "ppl"], group=["low-ppl", "high-ppl"], n=[40, 40], accuracy_before=[0.8, 0.6],
                      accuracy_after=[0.75, 0.4], delta_accuracy=[-0.05, -0.2], ci_low=[-0.1, -0.3],
                      ci_high=[0.0, -0.1])).write_parquet(run / "interventions.parquet")
    return run


def test_report_on_bare_sweep_lists_what_it_skipped(tmp_path):
    store = write_store(tmp_path / "sweep", updates=False, vocab=False)
    rep = build_report(store, tmp_path / "out", draw_figures=False)
    text = rep.report_path.read_text()
    skipped = text.split("## Skipped")[1]
    assert "Δp analyses" in skipped and "no `updates`" in skipped
    assert "training curves" in skipped and "no steps.parquet" in skipped and "sweep store" in skipped
    assert "advantage analyses" in skipped and "no advantage column" in skipped
    assert "semantic token categories" in skipped and "interventions" in skipped
    assert "D. Which tokens change probability" not in text
    assert "Stage boundary: step" in text
    assert {f.key: f.verdict for f in rep.findings}["D"] == NOT_MEASURED
    assert (tmp_path / "out" / "tables" / "polarity_entropy.csv").is_file()


def test_report_sweep_with_train_run_has_delta_p_sections(run_layout, tmp_path):
    rep = build_report(run_layout / "baseline" / "sweep", tmp_path / "out", train_run=run_layout / "baseline",
                       interventions=run_layout / "interventions.parquet")
    text = rep.report_path.read_text()
    for title in ("D. Which tokens change probability", "E. Updates and gradient norm", "F. Semantic token categories",
                  "G. Perplexity buckets", "J. Entropy by relative position", "Training curves", "H/K."):
        assert title in text, title
    assert "Δp analyses" not in text.split("## Skipped")[1]
    assert rep.boundary is not None and rep.boundary.detector == DEFAULT_DETECTOR
    for name in ("fig1_entropy_accuracy", "fig3a_delta_p_histogram", "fig3b_entropy_bins", "fig3c_categories",
                 "fig4a_ppl_share", "fig5a_position", "fig4b_intervention_ppl"):
        assert (tmp_path / "out" / "figures" / f"{name}.png").is_file(), name
        assert (tmp_path / "out" / "figures" / f"{name}.pdf").is_file(), name
    assert (tmp_path / "out" / "tables" / "delta_p_distribution.csv").is_file()
    verdicts = {f.key: f.verdict for f in rep.findings}
    # the synthetic data were built to show these
    assert verdicts["A"] == AGREES and verdicts["J"] == AGREES and verdicts["E"] == AGREES and verdicts["H"] == AGREES
    assert verdicts["K"] == NOT_MEASURED


def test_report_on_train_store_has_advantages_and_manual_boundary(run_layout, tmp_path):
    rep = build_report(run_layout / "baseline", tmp_path / "out", boundary=4, draw_figures=False)
    text = rep.report_path.read_text()
    assert "step 4** (manual" in text
    assert "Advantages of the training rollouts" in text
    assert "a sweep exists" in text.split("## Skipped")[1]


def test_report_cli(run_layout, tmp_path, capsys):
    from entropy_lens.cli import main

    assert main(["report", str(run_layout / "baseline" / "sweep"), "--out", str(tmp_path / "r"), "--no-figures",
                 "--n-boot", "200"]) == 0
    assert str(tmp_path / "r" / "REPORT.md") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["report", str(run_layout / "baseline" / "sweep"), "--out", str(tmp_path / "r2"),
                 "--detector", "kneee"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_report_writes_and_links_the_explorer_page(run_layout, tmp_path, capsys):
    """view.html beside REPORT.md, linked from it, built by entropy_lens.view on the report's own RunView (the
    same boundary, the training run's curves); --no-view leaves it out."""
    import json
    import re

    from entropy_lens.cli import main

    rep = build_report(run_layout / "baseline" / "sweep", tmp_path / "out", train_run=run_layout / "baseline",
                       boundary=4, draw_figures=False, n_boot=200)
    page = tmp_path / "out" / "view.html"
    assert rep.view == page and page.is_file() and page in rep.files
    assert "[view.html](view.html)" in rep.report_path.read_text()
    html = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="lens-data">(.*?)</script>', html, re.S).group(1))
    assert data["boundary"]["step"] == 4 == rep.boundary.step
    assert data["curves"]["step"] == list(range(10)) and data["shown"] == data["total"] == 160
    assert main(["report", str(run_layout / "baseline"), "--out", str(tmp_path / "r"), "--no-figures", "--no-view",
                 "--n-boot", "200"]) == 0
    assert "explorer page" not in capsys.readouterr().out
    assert not (tmp_path / "r" / "view.html").exists()
    assert "view.html" not in (tmp_path / "r" / "REPORT.md").read_text()


def test_a_page_that_cannot_be_built_is_a_skip_not_a_failure(run_layout, tmp_path, monkeypatch):
    from entropy_lens.errors import UserError
    from entropy_lens.report import build

    def too_big(view, out, **kw):
        raise UserError("one response per step already takes 30.0 MB of page data; raise --max-mb")

    monkeypatch.setattr(build, "write_view", too_big)
    rep = build_report(run_layout / "baseline" / "sweep", tmp_path / "out", draw_figures=False, n_boot=200)
    assert rep.view is None and not (tmp_path / "out" / "view.html").exists()
    assert "**explorer page (view.html)**: one response per step" in rep.report_path.read_text().split("## Skipped")[1]


SCRIPTS = ["fig1_stages", "fig2_rising", "fig3_plateau", "fig4_instance", "fig5_position", "fig6_attribution",
           "fig_methods", "fig_response"]


def _script(name):
    return importlib.import_module(f"figures.{name}")


def test_figure_scripts_draw_and_skip(run_layout, tmp_path, capsys):
    out = tmp_path / "figs"
    written = {p.name for s in SCRIPTS for p in _script(s).main(run_layout, out)}
    printed = capsys.readouterr().out
    for stem in ("fig1_entropy_accuracy", "fig2b_token_shift", "fig2c_polarity_entropy", "fig2d_defects",
                 "fig3a_delta_p_histogram", "fig3b_entropy_bins", "fig3c_categories", "fig4a_ppl_share",
                 "fig4b_intervention_ppl", "fig4cd_ppl_runs", "fig5a_position", "figR_methods",
                 "fig_response_length", "fig_response_categories", "fig6a_entropy_contributions",
                 "fig6c_shares_rising", "fig6c_shares_plateau"):
        assert f"{stem}.png" in written and f"{stem}.pdf" in written, stem
        assert (out / f"{stem}.png").stat().st_size > 0
    # absent inputs: no position runs, no position interventions
    assert "skipped fig5b_intervention_position" in printed and "kind = 'position'" in printed
    assert "skipped fig5cd_position_runs" in printed
    assert "fig5b_intervention_position.png" not in written
    # the fixture's training run has no updates: no realized change to draw against the prediction
    assert "skipped fig6b_predicted_vs_realized" in printed


def test_figure_scripts_on_empty_run_skip_everything(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    written = [p for s in SCRIPTS for p in _script(s).main(tmp_path / "run", tmp_path / "figs")]
    printed = capsys.readouterr().out
    assert written == []
    assert printed.count("skipped") >= len(SCRIPTS)


def test_write_findings_gives_every_verdict(run_layout, tmp_path):
    from figures.findings import write_findings

    path = write_findings(run_layout, tmp_path / "FINDINGS.md")
    text = path.read_text()
    table = [ln for ln in text.splitlines() if ln.startswith("| ") and ln[2] in CLAIMS]
    assert [ln[2] for ln in table] == sorted(CLAIMS)
    for ln in table:
        assert any(v in ln for v in (AGREES, DISAGREES, NOT_MEASURED)), ln
    assert text.count("Verdict: **") == len(CLAIMS)
    assert "| L |" in text and "not measured" in [ln for ln in table if ln.startswith("| L")][0]
    assert "| I |" in text and "ppl-high" in text  # I needs the high-PPL run, absent here


def test_fig5a_tables_are_the_reports(run_layout, tmp_path, monkeypatch):
    """The report's fig5a_position and figures/fig5_position.py draw the same two tables: the U-curve over every
    step and |Δp| by position over the run's Δp scope (here the plateau, which differs from all steps)."""
    import entropy_lens
    from entropy_lens.analysis.position import update_by_position

    fig5 = _script("fig5_position")
    drawn = []
    monkeypatch.setattr(fig5.position_plots, "plot_u_curve", lambda *tables: drawn.append(tables) or plt.figure())
    fig5.main(run_layout, tmp_path / "figs")
    rep = build_report(run_layout / "baseline" / "sweep", tmp_path / "out", train_run=run_layout / "baseline",
                       draw_figures=False)
    ((by_position, by_position_updates),) = drawn
    assert by_position.equals(rep.tables["entropy_by_position"])
    assert by_position_updates.equals(rep.tables["update_by_position"])
    assert f"analyses use plateau steps (≥ {rep.boundary.step})" in rep.report_path.read_text()
    store = entropy_lens.open(run_layout / "baseline" / "sweep")
    every_step = update_by_position(tokens=store.tokens, updates=store.updates)
    assert not every_step.equals(by_position_updates)  # the two rules differ here, so this test tells them apart


def test_sections_run_in_registration_order(run_layout, tmp_path):
    from entropy_lens.report.sections import ORDER, SECTIONS

    assert sorted(ORDER) == SECTIONS.names() and len(ORDER) == len(set(ORDER))
    rep = build_report(run_layout / "baseline" / "sweep", tmp_path / "out", train_run=run_layout / "baseline",
                       interventions=run_layout / "interventions.parquet", draw_figures=False)
    assert [s.key for s in rep.sections] == ORDER  # every section has its inputs here
    assert rep.skipped == []
    assert rep.report_path.read_text().endswith("## Skipped\n\n- Nothing: every analysis ran.\n")
    assert [f.key for f in rep.findings] == sorted("ABCDEFGHJKNO")


def test_where_the_entropy_went_section_measures_the_account(run_layout, tmp_path):
    # The training run's rollouts carry advantages but no updates here: the account is measured, the
    # validation is not (and says why); N and O are decided, not "not measured".
    rep = build_report(run_layout / "baseline" / "sweep", tmp_path / "out", train_run=run_layout / "baseline")
    section = next(s for s in rep.sections if s.key == "attribution")
    text = "\n".join(section.lines)
    assert "the trainer's advantage" not in text and "`shaped_advantage`" in text  # shaped = 1.1 A is used
    assert "No realized change" in text
    d = rep.tables["attribution_decomposition"]
    for (stage, axis), g in d.group_by(["stage", "axis"]):
        assert g["share_net"].sum() == pytest.approx(1.0, abs=1e-9), (stage, axis)
    assert {"polarity", "entropy_quantile", "position", "ppl_bucket", "category"} <= set(d["axis"].to_list())
    by_key = {f.key: f for f in rep.findings}
    assert by_key["N"].verdict in (AGREES, DISAGREES) and by_key["O"].verdict in (AGREES, DISAGREES)
    assert (tmp_path / "out" / "figures" / "attribution_contributions.png").is_file()


def test_where_the_entropy_went_on_a_sweep_uses_group_normalised_rewards(run_layout, tmp_path):
    rep = build_report(run_layout / "baseline" / "sweep", tmp_path / "out", draw_figures=False)
    text = "\n".join(next(s for s in rep.sections if s.key == "attribution").lines)
    assert "group-normalised rewards" in text and "Validation (realized ΔH = the entropy of the same context under " \
        "the next stored checkpoint" in text
    v = rep.tables["attribution_validation"]
    assert v.filter(pl.col("level") == "token")["n"][0] > 0


def test_stage_conditioned_findings_carry_their_verdicts_at_the_ci_ends(run_layout, tmp_path):
    rep = build_report(run_layout / "baseline" / "sweep", tmp_path / "out", train_run=run_layout / "baseline",
                       draw_figures=False)
    assert rep.boundary is not None and rep.boundary.ci is not None
    lo, hi = rep.boundary.ci
    by_key = {f.key: f for f in rep.findings}
    for key in "ABCDEFGNO":
        f = by_key[key]
        assert f.at_ci_ends is not None and (f.at_ci_ends[0][0], f.at_ci_ends[1][0]) == (lo, hi), key
        assert f.sensitivity in ("robust",) or f.sensitivity.startswith("sensitive to the boundary"), key
    for key in "HJK":  # interventions and the U-curve do not depend on the boundary
        assert by_key[key].at_ci_ends is None and by_key[key].sensitivity is None
    text = rep.report_path.read_text()
    assert text.count("Boundary: robust") + text.count("Boundary: sensitive to the boundary") == 9


def test_sensitivity_reads_the_verdicts_at_both_ends(monkeypatch):
    from types import SimpleNamespace

    from entropy_lens.analysis.findings import Finding
    from entropy_lens.report import build

    view = SimpleNamespace(boundary=SimpleNamespace(ci=(28, 35)))
    at = {28: {"A": AGREES, "C": AGREES}, 35: {"A": DISAGREES, "C": AGREES}}
    monkeypatch.setattr(build, "verdicts_at", lambda v, step, settings: at[step])
    found = {k: Finding(k, "m", AGREES) for k in "ACH"}
    out = build.with_boundary_sensitivity(found, view, None)
    assert out["A"].sensitivity == f"sensitive to the boundary ({AGREES} at step 28, {DISAGREES} at step 35)"
    assert out["C"].sensitivity == "robust"
    assert out["H"].sensitivity is None
    view.boundary.ci = None
    assert build.with_boundary_sensitivity(found, view, None)["A"].at_ci_ends is None


def test_where_the_entropy_went_on_a_training_run_validates_against_the_step_update(tmp_path):
    store = write_store(tmp_path / "train", kind="train", updates=True, steps_table=True, advantage=True)
    rep = build_report(store, tmp_path / "out", draw_figures=False)
    text = "\n".join(next(s for s in rep.sections if s.key == "attribution").lines)
    assert "under the weights right after the step's update" in text and "per token: Pearson r" in text
