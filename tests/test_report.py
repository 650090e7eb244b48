"""The findings report: the table parses back with one row per check, every linked chart is
a valid PNG, an uncomputable chart is left out with a note, and `pytest --findings-md`
writes what the tests actually did.

One in-process report on MiniLM and the core set (module scope, shared by most tests) and
one CLI run on a user's plain-text sentence file; mxbai and colbert are made absent (an
empty HF cache) so their rows are `not run` on every machine.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from geometry_checks import capture
from geometry_checks import charts as CH
from geometry_checks import claims as CL
from geometry_checks import report as R
from geometry_checks.measure import Measurement

pytestmark = pytest.mark.minilm

ROOT = Path(__file__).resolve().parent.parent
CHART_KEYS = {spec.key for spec in CH.PER_MODEL} | {CH.DENSE_VS_COLBERT.key}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
USER_SENTENCES = """\
# a user's own sentences: no pairs, no retrieval items
The river flooded the old mill after three days of rain
A young violinist won the regional competition last spring
Farmers sold their apples at the market on Saturday
The committee postponed its decision until next month
"""


def _isolated_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache: mxbai and colbert are absent
    env["HF_HUB_OFFLINE"] = "1"
    # the child imports this checkout's geometry_checks, installed or not
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
    return env


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """The report of the default run (MiniLM on fixtures/core.json), written once."""
    from geometry_checks.lab import Lab

    out = tmp_path_factory.mktemp("report-core")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(capture, "hub_cache_dir", lambda *a, **k: None)  # mxbai/colbert: not run, everywhere
        lab = Lab(device="cpu")
        result = R.build_report(lab, ["minilm"], out)
    result["lab"] = lab
    return result


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """`geometry-checks report` on a user's plain-text sentence file (a real CLI run)."""
    tmp = tmp_path_factory.mktemp("report-user")
    sentences = tmp / "mine.txt"
    sentences.write_text(USER_SENTENCES)
    out = tmp / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "geometry_checks", "report", "--sentences", str(sentences), "--out", str(out),
         "--device", "cpu"],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=600, env=_isolated_env(tmp))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"out": out, "stdout": proc.stdout, "md": (out / "findings.md").read_text()}


def parse_table(markdown: str) -> tuple[list[str], list[dict]]:
    """The first pipe table of a markdown text: (header, rows as dicts), `\\|` unescaped."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append(line)

    def cells(line: str) -> list[str]:
        parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        return [p.strip().replace("\\|", "|") for p in parts]

    header = cells(block[0])
    assert all(re.fullmatch(r":?-+:?", c) for c in cells(block[1])), block[1]
    rows = [dict(zip(header, cells(line), strict=True)) for line in block[2:]]
    return header, rows


def linked_images(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown)


def assert_valid_png(path: Path) -> None:
    assert path.is_file(), f"{path.name} is linked but missing"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a matplotlib dependency
        import matplotlib.image as mpimg

        shape = mpimg.imread(path).shape
    else:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            shape = (img.height, img.width)
    assert shape[0] >= 200 and shape[1] >= 300, f"{path.name}: {shape} is too small to read"


# --------------------------------------------------------------------------- the table


def test_markdown_parses_as_one_row_per_check(core):
    header, rows = parse_table(core["path"].read_text())
    assert header == R.COLUMNS
    expected = {(cid, "+".join(c.models)) for cid, c in CL.load_article_claims().items()}
    expected |= {(cid, "minilm") for cid in CL.dense_claims()}
    assert len(rows) == len(expected)
    assert {(r["claim"], r["model"]) for r in rows} == expected
    assert all(r["verdict"] in ("passed", "failed", "xfailed", "xpassed", "not run") for r in rows)


def test_findings_json_is_the_twin_of_the_table(core):
    _, md_rows = parse_table(core["path"].read_text())
    data = json.loads(core["path"].with_suffix(".json").read_text())
    assert [(r["claim"], r["model"], r["verdict"]) for r in data["rows"]] == \
        [(r["claim"], r["model"], r["verdict"]) for r in md_rows]
    assert data["summary"]["checks"] == len(md_rows)
    assert sum(v for k, v in data["summary"].items() if k != "checks") == len(md_rows)
    assert {c["file"] for c in data["charts"]} == set(linked_images(core["path"].read_text()))


def test_minilm_dense_checks_pass_and_article_claims_are_not_run(core):
    rows = core["rows"]
    dense = [r for r in rows if r["model"] == "minilm"]
    assert dense and all(r["verdict"] == "passed" for r in dense), [r for r in dense if r["verdict"] != "passed"]
    article = [r for r in rows if r["model"] != "minilm"]
    assert all(r["verdict"] == "not run" for r in article)


def test_not_run_rows_are_short_and_say_once_how_to_supply_weights(core):
    md = core["path"].read_text()
    _, rows = parse_table(md)
    not_run = [r for r in rows if r["verdict"] == "not run"]
    assert not_run
    for r in not_run:
        assert r["measured"] == "not run: weights not found"
        model = r["model"].split("+")[0]
        assert f"--model-path {model}=DIR" in r["notes"]
    # the full instruction (with the download command) once per model, below the table
    assert md.count("huggingface-cli download mixedbread-ai/mxbai-embed-large-v1") == 1
    assert md.count("huggingface-cli download jinaai/jina-colbert-v2") == 1
    longest = max(len(line) for line in md.splitlines() if line.startswith("|"))
    assert longest < 1000, f"a table line is {longest} characters long"


def test_mxbai_pooled_rows_name_its_own_cls_pooling(core):
    rows = {r["claim"]: r for r in core["rows"] if r["model"] == "mxbai"}
    assert rows["recall-hard"]["pooling"] == "mean (own: cls)"
    assert rows["matryoshka-bands"]["pooling"] == "mean (own: cls)"
    assert rows["collapse"]["pooling"] == ""  # token-cloud metric: no pooling
    assert "pools with CLS" in core["path"].read_text()


# --------------------------------------------------------------------------- the charts


def test_default_report_links_every_chart_as_a_valid_png(core):
    out = core["path"].parent
    links = linked_images(core["path"].read_text())
    assert len(links) >= 8
    for name in links:
        assert_valid_png(out / name)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(links), "every PNG is linked, and only once"
    assert {c["chart"] for c in core["charts"]} >= CHART_KEYS


def test_every_chart_is_titled_with_model_and_set_and_draws_published_dashed(core):
    lab = core["lab"]
    m = lab.measurement("minilm")
    report = CH.ModelReport("minilm", m, R.token_paths(lab.states("minilm"), lab.default_sentences))
    ctx = CH.ChartContext.load(m.sentence_set)
    for spec in CH.PER_MODEL:
        ax = spec.draw(ctx, report).axes[0]
        title = ax.get_title()
        assert "minilm" in title and "'core'" in title, (spec.key, title)
        for line in ax.get_lines():
            label = line.get_label() or ""
            if "(published)" in label:
                assert line.get_linestyle() == "--", (spec.key, label)
            elif label.startswith("minilm"):
                assert line.get_linestyle() == "-", (spec.key, label)
        if spec.key not in ("dim-correlation", "token-trajectory"):
            # MiniLM (L=6) shares these charts with the article's L=24 curves
            assert ax.get_xlabel().startswith("relative depth"), (spec.key, ax.get_xlabel())


def test_depth_axis_is_absolute_when_every_curve_has_the_same_depth():
    pub = CH.ChartContext.load("core").published["mxbai"]
    m = Measurement(model="mxbai", sentence_set="core", depths=25, provenance={"pooling": "mean"},
                    curves={k: pub["curves"][k] for k in ("intra_sentence_cosine", "cross_sentence_cosine")})
    ax = CH.chart_cosine(CH.ChartContext.load("core"), CH.ModelReport("mxbai", m)).axes[0]
    assert ax.get_xlabel().startswith("depth")


def test_token_trajectory_paths_are_in_fixed_depth0_pca_axes(core):
    from geometry_checks import metrics as M

    lab = core["lab"]
    t = R.token_paths(lab.states("minilm"), lab.default_sentences)
    assert t["sentence"] == lab.default_sentences.pairs["negation"][0]
    assert 2 <= len(t["tokens"]) <= 5 and "surged" in t["tokens"]
    assert len({w.lower() for w in t["tokens"]}) == len(t["tokens"])
    assert all(len(path) == 7 and all(len(p) == 2 for p in path) for path in t["paths"])
    # depth-0 positions lie within the spread of the depth-0 cloud the axes were fitted on
    states = lab.states("minilm")
    cloud = states.select([states.index(s) for s in lab.default_sentences.sentences])
    tokens0 = M.content_tokens(cloud.states[:1], cloud.content)[0]
    proj = M._project(tokens0.double(), *M.pca_fit(tokens0))
    lo, hi = proj.min(0).values.tolist(), proj.max(0).values.tolist()
    for path in t["paths"]:
        assert all(lo[i] - 1e-6 <= path[0][i] <= hi[i] + 1e-6 for i in range(2))


def _small_measurement() -> Measurement:
    """A 7-depth measurement with only the two token-cosine curves (no retrieval, no pairs)."""
    return Measurement(model="small", sentence_set="mine", depths=7, provenance={"pooling": "mean"},
                       curves={"intra_sentence_cosine": [0.1, 0.2, 0.3, 0.3, 0.3, 0.35, 0.4],
                               "cross_sentence_cosine": [0.1, 0.15, 0.2, 0.2, 0.2, 0.2, 0.05]},
                       not_computed={"recall_at_k": "the sentence file has no retrieval items",
                                     "pair_cosine": "the sentence file has no pairs"})


def test_a_chart_whose_metric_was_not_computed_is_left_out_with_a_note(tmp_path):
    written, skipped = CH.draw_all([CH.ModelReport("small", _small_measurement())], CH.ChartContext.load("mine"),
                                   tmp_path)
    assert {c["chart"] for c in written} == {"cosine", "dense-vs-colbert"}
    reasons = {s["chart"]: s["reason"] for s in skipped}
    assert set(reasons) == CHART_KEYS - {"cosine", "dense-vs-colbert"}
    assert "no retrieval items" in reasons["recall"] and "no pairs" in reasons["pair-cosine"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(c["file"] for c in written)
    md = R.findings_markdown([], written, skipped)
    assert "## Not drawn" in md
    assert "- Easy and hard recall by depth (small): recall_at_k not computed (the sentence file has no " \
           "retrieval items)" in md
    assert "small-recall.png" not in md


def test_an_extra_chart_that_cannot_draw_is_noted_not_drawn(tmp_path):
    extra = [("extra-yes", "Yes", "drawn", lambda meas, path: _tiny_png(path)),
             ("extra-no", "No", "not drawn", lambda meas, path: False)]
    written, skipped = CH.draw_all([CH.ModelReport("small", _small_measurement())], CH.ChartContext.load("mine"),
                                   tmp_path, extra)
    assert "extra-yes" in {c["chart"] for c in written}
    assert "extra-no" in {s["chart"] for s in skipped}
    assert (tmp_path / "small-extra-yes.png").exists() and not (tmp_path / "small-extra-no.png").exists()


def _tiny_png(path: Path) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1])
    fig.savefig(path)
    return True


def test_report_on_a_user_sentence_file(user):
    out, md = user["out"], user["md"]
    assert "sentence set: mine (4 sentences, 0 retrieval items, 0 pairs)" in md
    links = linked_images(md)
    assert len(links) >= 8
    for name in links:
        assert_valid_png(out / name)
    not_drawn = md.split("## Not drawn", 1)[1]
    for title, why in [("Easy and hard recall by depth", "no retrieval items"),
                       ("Negation vs role-reversal pair cosine", "no pairs"),
                       ("Matryoshka band cosine", "no pairs"), ("Top-5 discriminative dimensions", "no pairs")]:
        assert re.search(rf"- {re.escape(title)} \(minilm\): .*{why}", not_drawn), (title, not_drawn)
    for key in ("recall", "pair-cosine", "matryoshka-bands", "discriminative-dims"):
        assert not (out / f"minilm-{key}.png").exists()
    _, rows = parse_table(md)
    by_claim = {r["claim"]: r for r in rows if r["model"] == "minilm"}
    assert by_claim["dense-negation-late"]["verdict"] == "not run"
    assert "no pairs" in by_claim["dense-negation-late"]["measured"]
    assert by_claim["dense-collapse"]["verdict"] == "passed"


# --------------------------------------------------------------------------- the model's own pooling


def test_pooled_rows_report_the_models_own_cls_pooling(core):
    from geometry_checks.measure import _jsonify, pooled

    lab = core["lab"]
    m = lab.measurement("minilm")
    cls = {k: _jsonify(v) for k, v in pooled(lab.states("minilm"), lab.default_sentences, "cls").items()}
    as_cls_model = dataclasses.replace(m, provenance={**m.provenance, "pooling": "cls"}, by_pooling={"cls": cls})
    claim = CL.dense_claims()["dense-role-reversal"]
    verdict = CL.run_dense_check(claim, as_cls_model, "minilm")
    row = R.rows_from_pytest([{"claim": claim, "model": "minilm", "outcome": "passed", "verdict": verdict,
                               "reason": "", "get": lambda name: as_cls_model}])[0]
    assert row["pooling"] == "mean (own: cls)"
    assert re.search(r"cls pool \(minilm's own\) (passes|fails): min \d\.\d{3} at \d", row["notes"]), row
    fig = CH.chart_pairs(CH.ChartContext.load("core"), CH.ModelReport("minilm", as_cls_model))
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "minilm negation (cls pool)" in labels and "minilm negation (mean pool)" in labels


# --------------------------------------------------------------------------- pytest --findings-md


FAKE_TESTS = textwrap.dedent("""
    import pytest
    from geometry_checks import claims as CL

    CLAIMS = CL.load_article_claims()

    def verdict(cid, passed):
        return CL.Verdict(cid, "mxbai", passed, "measured 0.500", "0.880", "atol 0.05",
                          "" if passed else "intra at 24: 0.500 vs 0.880")

    @pytest.mark.parametrize("claim,model", [(CLAIMS["collapse"], "mxbai")], ids=["pass"])
    def test_passes(claim, model, record_verdict):
        record_verdict(verdict(claim.id, True))

    @pytest.mark.parametrize("claim,model", [(CLAIMS["baseline-gap"], "mxbai")], ids=["fail"])
    def test_fails(claim, model, record_verdict):
        v = verdict(claim.id, False)
        record_verdict(v)
        assert v.passed, v.message

    @pytest.mark.parametrize("claim,model", [
        pytest.param(CLAIMS["late-writes"], "mxbai", marks=pytest.mark.xfail(reason="known: 0.5 not 0.9", strict=True))
    ], ids=["xfail"])
    def test_xfails(claim, model, record_verdict):
        v = verdict(claim.id, False)
        record_verdict(v)
        assert v.passed, v.message

    @pytest.mark.parametrize("claim,model", [(CLAIMS["colbert-spread"], "colbert")], ids=["skip"])
    def test_skips(claim, model):
        pytest.skip("weights for colbert (jinaai/jina-colbert-v2) not found: pass --model-path colbert=DIR "
                    "(a local copy of the model) or put it in the Hugging Face cache (HF_HOME)")
""")


def test_findings_md_reflects_real_pytest_outcomes(tmp_path):
    (tmp_path / "test_fake_claims.py").write_text(FAKE_TESTS)
    out = tmp_path / "findings" / "findings.md"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "geometry_checks.plugin", "-p", "no:cacheprovider", "-q",
         str(tmp_path / "test_fake_claims.py"), "--findings-md", str(out), "--rootdir", str(tmp_path)],
        check=False, capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env=_isolated_env(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the deliberate failure fails the run
    _, rows = parse_table(out.read_text())
    by_claim = {r["claim"]: r for r in rows}
    assert len(rows) == 4
    assert by_claim["collapse"]["verdict"] == "passed"
    assert by_claim["baseline-gap"]["verdict"] == "failed"
    assert "intra at 24: 0.500 vs 0.880" in by_claim["baseline-gap"]["notes"]
    assert by_claim["late-writes"]["verdict"] == "xfailed"
    assert "known: 0.5 not 0.9" in by_claim["late-writes"]["notes"]
    assert by_claim["colbert-spread"]["verdict"] == "skipped"
    assert by_claim["colbert-spread"]["measured"] == "not run: weights not found"
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["summary"] == {"checks": 4, "passed": 1, "failed": 1, "xfailed": 1, "skipped": 1}
