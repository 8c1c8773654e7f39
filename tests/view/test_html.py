"""The page and ``entropy-lens view``: self-contained, holds the stored text and every step; bad input exits 2."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from entropy_lens.cli import main
from tests.view.stores import write_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("view") / "store")


def embedded(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="lens-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_page_is_self_contained_and_holds_the_responses(store, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["view", str(store), "--out", str(out), "--samples-per-step", "2"]) == 0
    assert str(out) in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(//|[a-z]+:)""", html, re.I)
    assert "<link" not in html and not re.search(r"<script[^>]*\bsrc=", html)
    data = embedded(html)
    assert data["curves"]["step"] == [0, 1, 2, 3]
    texts = pl.read_parquet(store / "samples", hive_partitioning=False).select("step", "prompt_id", "sample_id", "text")
    r = data["responses"]
    shown = set(zip(r["step"], r["prompt_id"], r["sample_id"]))
    assert len(shown) >= 8
    for step, prompt, sample, text in texts.iter_rows():
        assert (text in html) == ((step, prompt, sample) in shown)  # stored text, whole groups of shown prompts
    assert f"showing {data['shown']} of {data['total']} responses" in html and data["shown"] < data["total"]


def test_default_out_is_beside_the_store(store, capsys):
    assert main(["view", str(store)]) == 0
    assert (store / "view.html").is_file()
    assert "showing 48 of 48 responses" in capsys.readouterr().out


def test_a_bad_store_exits_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["view", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("entropy-lens view: error:")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_too_small_a_budget_exits_2_and_writes_nothing(store, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["view", str(store), "--out", str(out), "--max-mb", "0.001"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()
