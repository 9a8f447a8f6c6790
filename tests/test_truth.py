"""The truth check (tools/truth_check.py, docs/numbers.md): every number in the prose is backed, or reported.

Fast: no notebook runs. Three parts: the rules on small texts written here; bad input; and the issue's examples in
today's notebooks, frozen in tests/fixtures/truth_today.json (the notebooks are being rewritten; the fixture keeps
the evidence). `python tests/test_truth.py --freeze` rewrote that fixture from the committed notebooks once; it only
makes sense while they still hold the frozen cells.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TODAY = ROOT / "tests" / "fixtures" / "truth_today.json"


def load_tool(name: str) -> types.ModuleType:
    """Import tools/<name>.py (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


truth = load_tool("truth_check")


# ------------------------------------------------------------------------------------------------------------------
# Helpers: a notebook or a README written into tmp_path


def code(*outputs: dict) -> dict:
    """A code cell with these outputs."""
    return {"cell_type": "code", "metadata": {}, "source": "print(...)", "outputs": list(outputs), "execution_count": 1}


def stream(text: str) -> dict:
    """A stdout output."""
    return {"output_type": "stream", "name": "stdout", "text": text.splitlines(keepends=True)}


def markdown(text: str) -> dict:
    """A markdown cell (source as a list of lines, as Jupyter writes it)."""
    return {"cell_type": "markdown", "metadata": {}, "source": text.splitlines(keepends=True)}


def write_notebook(path: Path, cells: list[dict]) -> Path:
    """A minimal nbformat-4 notebook file."""
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}), encoding="utf-8")
    return path


@pytest.fixture
def no_results(tmp_path: Path) -> Path:
    """An empty results folder."""
    folder = tmp_path / "results"
    folder.mkdir()
    return folder


def run(tmp_path: Path, cells: list[dict], results: Path | None = None) -> list:
    """Every finding of one notebook made of `cells`, with no records unless `results` is given."""
    if results is None:
        results = tmp_path / "empty-results"
        results.mkdir(exist_ok=True)
    path = write_notebook(tmp_path / "nb.ipynb", cells)
    return [f for report in truth.check([path], results_dir=results) for f in report.findings]


def status(findings: list, text: str) -> str:
    """The status of the one finding whose number reads `text`."""
    matching = [f.status for f in findings if f.text == text]
    assert len(matching) == 1, (text, [(f.text, f.status) for f in findings])
    return matching[0]


def statuses(tmp_path: Path, prose: str, output: str = "", results: Path | None = None) -> dict[str, str]:
    """{number as written: status} for one markdown cell under one code cell printing `output`."""
    findings = run(tmp_path, [code(stream(output)), markdown(prose)], results)
    return {f.text: f.status for f in findings}


# ------------------------------------------------------------------------------------------------------------------
# A planted stale number, and a correct one


def test_a_planted_stale_number_is_reported_and_a_correct_one_is_backed(tmp_path: Path) -> None:
    cells = [
        code(stream("test accuracy 84.43% after 418.3 s of training, 969 img/s\n")),
        markdown("## 2. Results\n\nThe model reached 84.4% after 418.3 s of training.\n"),
        markdown("It trained at 1,508 images/s on this machine.\n\n<details><summary>Solution</summary>\n\n"
                 "Measured: the loss fell to 1.73 in a few steps.\n\n</details>\n"),
    ]
    findings = run(tmp_path, cells)
    assert status(findings, "84.4%") == "outputs"
    assert status(findings, "418.3") == "outputs"
    stale = [f for f in findings if f.status == "unbacked"]
    assert [(f.cell, f.block, f.text) for f in stale] == [(2, "", "1,508"), (2, "solution", "1.73")]
    assert stale[0].sentence == "It trained at 1,508 images/s on this machine."
    assert stale[1].sentence == "Measured: the loss fell to 1.73 in a few steps."
    report = truth.format_report(truth.check([tmp_path / "nb.ipynb"], results_dir=tmp_path / "empty-results"))
    assert "cell 2: unbacked '1,508': It trained at 1,508 images/s on this machine." in report
    assert "cell 2 (solution): unbacked '1.73'" in report
    assert "UNBACKED 2" in report.splitlines()[2]


def test_the_command_exits_1_on_an_unbacked_number_and_0_when_all_is_backed(tmp_path: Path, no_results: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_notebook(tmp_path / "bad.ipynb", [code(stream("85.04%\n")), markdown("It reached 86.1%.")])
    good = write_notebook(tmp_path / "good.ipynb", [code(stream("85.04%\n")), markdown("It reached 85.0%.")])
    report = tmp_path / "report.txt"
    assert truth.main([str(bad), "--results", str(no_results), "--report", str(report)]) == 1
    assert "unbacked '86.1%'" in report.read_text(encoding="utf-8")
    assert truth.main([str(good), "--results", str(no_results)]) == 0
    assert "UNBACKED 0" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------------------
# Matching at the precision shown


@pytest.mark.parametrize(("prose", "output", "expected"), [
    ("84.4%", "84.43", "outputs"),  # rounds to what the prose shows
    ("84.4%", "84.40%", "outputs"),
    ("84.4%", "84.47%", "unbacked"),
    ("84.40%", "84.4", "outputs"),  # pandas drops the trailing zero
    ("84.40%", "84.43%", "unbacked"),  # the prose shows more than the output
    ("1,508 images/s", "1508.2 img/s", "outputs"),
    ("1,508 images/s", "1507 img/s", "unbacked"),
    ("15x faster", "ratio 15.4x", "outputs"),
    ("−2.84 points", "delta -2.84", "outputs"),  # a written minus sign must agree, and is specific enough
    ("+3.6 points", "delta -3.6%", "unbacked"),
    ("3.44 points", "delta -3.44", "outputs"),  # an unsigned claim matches either sign
    ("58 million parameters", "58,322,314 parameters", "outputs"),
])
def test_a_number_is_backed_at_the_precision_it_shows(tmp_path: Path, prose: str, output: str, expected: str) -> None:
    found = statuses(tmp_path, f"We measured {prose} here.", output)
    assert len(found) == 1 and next(iter(found.values())) == expected, found


def test_units_must_agree_and_convert_exactly(tmp_path: Path) -> None:
    output = "trained for 696 s, peak 2456 MB, 26.7 img/s, accuracy 44.1%\n"
    found = statuses(tmp_path, "It took 12 min and 2.4 GB; 44 images/s is wrong, 0.19 h is right, 44.1 s is not.",
                     output)
    assert found == {"12": "outputs", "2.4": "outputs", "44": "unbacked", "0.19": "outputs", "44.1": "unbacked"}


def test_a_short_measurement_needs_a_value_of_its_own_kind(tmp_path: Path) -> None:
    # 0.645 is a loss in a table: "x0.65" (two significant digits, a ratio) must not borrow it; 418.3 s may match a
    # value printed without a unit.
    found = statuses(tmp_path, "It cost x0.65 here and took 418.3 s.", "loss 0.645 | 418.3\n")
    assert found == {"x0.65": "unbacked", "418.3": "outputs"}


def test_a_count_is_backed_only_by_the_same_integer(tmp_path: Path) -> None:
    assert statuses(tmp_path, "It counts 5 images more.", "mean 5.3\n") == {"5": "unbacked"}
    assert statuses(tmp_path, "It counts 5 images more.", "5 more\n") == {"5": "outputs"}


def test_a_range_or_comparison_shares_its_unit(tmp_path: Path) -> None:
    found = statuses(tmp_path, "Runs took 218-233 s.", "218.1 s, 232.9 s\n")
    assert found == {"218": "outputs", "233": "outputs"}
    assert [t.unit for t in truth.tokens("1,508 against 2,335 images/s")] == ["img/s", "img/s"]


def test_a_unit_is_shared_only_between_numbers_of_one_magnitude() -> None:
    assert [t.unit for t in truth.tokens("66.3% ± 0.7 against 80.6% ± 0.7")] == ["%", "", "%", ""]
    assert [t.unit for t in truth.tokens("about 0.3-0.4 GB less")] == ["GB", "GB"]


def test_a_compound_duration_is_one_claim_in_seconds(tmp_path: Path) -> None:
    assert statuses(tmp_path, "pytest took 5 min 19 s.", "319.4 s\n") == {"5 min 19 s": "outputs"}


def test_dates_and_sizes_match_as_written(tmp_path: Path) -> None:
    found = statuses(tmp_path, "On 2026-12-01 it ran 256x6x6 maps, not 256x8x8.", "2026-12-01 | 256x6x6\n")
    assert found == {"2026-12-01": "outputs", "256x6x6": "outputs", "256x8x8": "unbacked"}


def test_html_table_headers_give_their_columns_a_unit(tmp_path: Path) -> None:
    table = ("<table><thead><tr><th></th><th>img/s</th><th>x previous</th></tr></thead><tbody>"
             "<tr><th>a</th><td>484.48</td><td>NaN</td></tr><tr><th>b</th><td>1648.72</td><td>1.33</td></tr></tbody></table>")
    html = {"output_type": "execute_result", "execution_count": 1, "metadata": {},
            "data": {"text/html": [table], "text/plain": ["(a table)"]}}
    findings = run(tmp_path, [code(html), markdown("The engine gained x1.33, 1,649 images/s; not x0.65.")])
    assert {f.text: f.status for f in findings} == {"x1.33": "outputs", "1,649": "outputs", "x0.65": "unbacked"}


# ------------------------------------------------------------------------------------------------------------------
# What is exempt, rule by rule (each rule of the module docstring)


@pytest.mark.parametrize(("prose", "text", "rule"), [
    ("Run `train(epochs=3)` first.", "3", "code"),
    ("```python\nrecipe = get_recipe('cpu', epochs=7)\n```\n", "7", "code"),
    ("See [the page](https://example.org/v2/37/page.html).", "37", "link"),
    ('<img src="plot.png" width="400">', "400", "link"),
    ("## 10. The upstream recipe", "10", "heading"),
    ("# 03 — Training", "03", "heading"),
    ("1. **forward**: the model turns images into logits;", "1", "list"),
    ("**4.** Time the upstream recipe.", "4", "list"),
    ("As section 10 measured.", "10", "reference"),
    ("Notebooks 01, 05 and 06 show it.", "05", "reference"),
    ("The loop of rungs 1-4.", "4", "reference"),
    ("Smith's test (section 3.3).", "3.3", "reference"),
    ("Step 3 of section 1 says so.", "3", "reference"),
    ("- [04 · Evaluation](notebooks/04_evaluation.ipynb): TTA", "04", "notebook"),
    ("The same machine ran 03 in an hour.", "03", "notebook"),
    ("Adam (Kingma & Ba, ICLR 2015) has betas.", "2015", "year"),
    ("(Krizhevsky et al. 2012, section 5)", "2012", "year"),
    ("*A Recipe for Training Neural Networks*, 2019.", "2019", "year"),
    ("Run with torch 2.14.1 here.", "2.14.1", "version"),
    ("It needs Python ≥ 3.10 to install.", "3.10", "version"),
    ("With $1 - ε + ε/10$ as target.", "10", "formula"),
])
def test_each_exemption(tmp_path: Path, prose: str, text: str, rule: str) -> None:
    found = statuses(tmp_path, prose)
    assert found.get(text) == f"exempt:{rule}", found


def test_a_year_needs_a_citation_and_a_number_after_a_relation_in_math_is_a_claim(tmp_path: Path) -> None:
    assert statuses(tmp_path, "It used 2000 validation images.") == {"2000": "unbacked"}
    found = statuses(tmp_path, "The target is $1 - ε + ε/10 = 0.92$.")
    assert found == {"1": "exempt:formula", "10": "exempt:formula", "0.92": "unbacked"}


def test_digits_of_names_are_not_numbers() -> None:
    text = "CIFAR-10 on a T4 or H100, top-1 of ResNet-9, fp16 and bf16, x86-64, ILSVRC-2010, 3conv"
    assert truth.tokens(text) == []


def test_readme_generated_blocks_are_exempt_and_its_measured_section_backs_the_rest(tmp_path: Path,
                                                                                    no_results: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Course\n\nThe `cpu` recipe reaches 85.30% in 227 s.\n\nIt reaches 91.2% too.\n\n"
                      "<!-- MEASURED -->\n| `cpu` | 85.30 ± 0.12 | 227 ± 8 |\n<!-- /MEASURED -->\n", encoding="utf-8")
    findings = truth.check([readme], results_dir=no_results)[0].findings
    assert {f.text: f.status for f in findings if "MEASURED" not in f.sentence and "±" not in f.sentence} == {
        "85.30%": "records", "227": "records", "91.2%": "unbacked"}
    assert {f.status for f in findings if "±" in f.sentence} == {"exempt:generated"}
    assert [f.where() for f in findings if f.status == "unbacked"] == ["line 5"]


# ------------------------------------------------------------------------------------------------------------------
# Records, facts, arithmetic, phrases


def test_a_record_backs_only_the_cells_that_cite_it(tmp_path: Path, no_results: Path) -> None:
    (no_results / "costs.json").write_text(json.dumps({"03": {"full": {"seconds": 696, "peak_mb": 2456}},
                                                       "date": "2026-12-01T10:00:00+00:00"}), encoding="utf-8")
    cells = [markdown("Measured (`results/costs.json`, 2026-12-01): 12 min, 2.4 GB."),
             markdown("Elsewhere: 12 min, 2.4 GB.")]
    findings = run(tmp_path, cells, no_results)
    assert [(f.cell, f.text, f.status) for f in findings] == [
        (0, "2026-12-01", "records"), (0, "12", "records"), (0, "2.4", "records"),
        (1, "12", "unbacked"), (1, "2.4", "unbacked")]


def test_a_fact_backs_only_near_its_pattern_and_in_its_unit(tmp_path: Path) -> None:
    findings = run(tmp_path, [markdown("CIFAR-10 has 50,000 training images."), markdown("We ran 50,000 steps."),
                              markdown("The paper reached 37.5% top-1 error."), markdown("Its top-1 loss was 37.5.")])
    assert [(f.cell, f.status) for f in findings] == [(0, "facts"), (1, "unbacked"), (2, "facts"), (3, "unbacked")]


def test_a_fact_limited_to_some_files_backs_nothing_elsewhere(tmp_path: Path, no_results: Path) -> None:
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"facts": [{"what": "two GPUs of 3 GB", "values": [3], "unit": "GB", "files": ["notebooks/02_*"],
                                            "source": "Krizhevsky et al. 2012, section 3.2"}]}), encoding="utf-8")
    (tmp_path / "notebooks").mkdir()
    for name in ("02_architecture.ipynb", "03_training.ipynb"):
        write_notebook(tmp_path / "notebooks" / name, [markdown("Each GPU had 3 GB.")])
    reports = truth.check(sorted((tmp_path / "notebooks").glob("*.ipynb")), results_dir=no_results, facts_file=facts)
    assert [(Path(r.file).name, r.findings[0].status) for r in reports] == [
        ("02_architecture.ipynb", "facts"), ("03_training.ipynb", "unbacked")]


def test_arithmetic_that_computes_is_backed_and_a_wrong_sum_is_not(tmp_path: Path) -> None:
    assert set(statuses(tmp_path, "fc6 sees 256x6x6 = 9,216 inputs.").values()) == {"arithmetic"}
    assert set(statuses(tmp_path, "The floor is ln(1 + 9/e) ≈ 1.461 nats.").values()) == {"arithmetic"}
    assert statuses(tmp_path, "fc6 sees 256x6x6 = 9,000 inputs.")["9,000"] == "unbacked"


def test_banned_phrases_are_reported_with_their_reason(tmp_path: Path) -> None:
    findings = run(tmp_path, [markdown("It took 2 min (the goal was\n3 min).")])
    phrase = [f for f in findings if f.status == "phrase"]
    assert [f.text for f in phrase] == ["the goal was"] and "project history" in phrase[0].detail


def test_every_fact_has_a_source_and_every_phrase_a_reason() -> None:
    facts, phrases = truth.load_facts()
    assert facts and phrases
    assert all(f.source.strip() and (f.values or f.strings) for f in facts)
    assert all(p.why.strip() for p in phrases)


def _numbers(value: object) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, (list, tuple, set)):
        return [n for v in value for n in _numbers(v)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_facts_read_from_the_course_settings_match_them() -> None:
    # A fact that cites a setting of the course ("code") goes stale when the setting changes: every number the
    # setting holds must be among the fact's values.
    entries = [f for f in json.loads((ROOT / "tools" / "facts.json").read_text())["facts"] if "code" in f]
    assert entries, "no fact cites a setting of the course"
    for entry in entries:
        where, name = entry["code"].split(":")
        if where.endswith(".py"):
            module = load_tool(Path(where).stem) if where.startswith("tools/") else None
        else:
            module = importlib.import_module(where)
        assert module is not None, f"facts.json: {entry['what']}: cannot read {where}"
        values = {round(float(v), 9) for v in entry["values"] if isinstance(v, (int, float))}
        held = _numbers(getattr(module, name))
        assert held and all(round(n, 9) in values for n in held), (
            f"tools/facts.json: '{entry['what']}' says {sorted(values)} but {entry['code']} holds {held}: "
            "update the fact (and the prose it backs)")


# ------------------------------------------------------------------------------------------------------------------
# Bad input: a message naming the file, never a silent pass


def test_a_notebook_that_is_not_json_fails_naming_the_file(tmp_path: Path, no_results: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "03_broken.ipynb"
    broken.write_text('{"cells": [', encoding="utf-8")
    with pytest.raises(truth.TruthCheckError, match=r"03_broken\.ipynb: notebook is not valid JSON"):
        truth.check([broken], results_dir=no_results)
    assert truth.main([str(broken), "--results", str(no_results)]) == 2
    assert "03_broken.ipynb" in capsys.readouterr().err


def test_a_notebook_without_cells_or_with_a_bad_cell_fails_naming_the_file(tmp_path: Path, no_results: Path) -> None:
    (tmp_path / "a.ipynb").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(truth.TruthCheckError, match=r"a\.ipynb: not a Jupyter notebook"):
        truth.check([tmp_path / "a.ipynb"], results_dir=no_results)
    write_notebook(tmp_path / "b.ipynb", [markdown("fine"), "not a cell"])
    with pytest.raises(truth.TruthCheckError, match=r"b\.ipynb: cell 1 is not a notebook cell"):
        truth.check([tmp_path / "b.ipynb"], results_dir=no_results)


@pytest.mark.parametrize("content", [b'{"seconds": 12', b"\xff\xfe\x00 not text"])
def test_a_results_file_that_cannot_be_read_fails_naming_the_file(tmp_path: Path, no_results: Path, content: bytes,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (no_results / "time_to_accuracy_cpu.json").write_bytes(content)
    notebook = write_notebook(tmp_path / "nb.ipynb", [markdown("Nothing to see.")])
    with pytest.raises(truth.TruthCheckError, match=r"time_to_accuracy_cpu\.json: results file"):
        truth.check([notebook], results_dir=no_results)
    assert truth.main([str(notebook), "--results", str(no_results)]) == 2
    assert "time_to_accuracy_cpu.json" in capsys.readouterr().err


def test_a_fact_without_a_source_fails_naming_the_fact_list(tmp_path: Path) -> None:
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"facts": [{"what": "CIFAR-10 classes", "values": [10]}]}), encoding="utf-8")
    with pytest.raises(truth.TruthCheckError, match=r"facts\.json: facts\[0\]: every fact needs a \"source\""):
        truth.load_facts(facts)


def test_the_command_line_reports_unreadable_input_with_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ipynb"
    broken.write_text("not json", encoding="utf-8")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "truth_check.py"), str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "broken.ipynb: notebook is not valid JSON" in done.stderr


# ------------------------------------------------------------------------------------------------------------------
# The issue's examples, in today's notebooks (frozen in tests/fixtures/truth_today.json)

# (notebook, cell, number or phrase as the report writes it, status): what issue 27 lists, as the check reports it.
EXAMPLES = [
    ("03_training.ipynb", 19, "x0.65", "unbacked"),  # the engine rung "costs x0.65"; the cell shows x1.33
    ("03_training.ipynb", 19, "1,508", "unbacked"),
    ("03_training.ipynb", 19, "2,335", "unbacked"),
    ("03_training.ipynb", 74, "44", "unbacked"),  # "the 44 images/s section 10 measured"; it printed 26.7
    ("03_training.ipynb", 72, "200", "unbacked"),  # "about 200 s per schedule"; section 7 printed 418.3 s
    ("06_performance.ipynb", 0, "7.4", "unbacked"),  # "about 7.4 hours"; section 2 prints 6.6 h
    ("05_ablations.ipynb", 31, "+3.6", "unbacked"),  # "BCE wins" by +3.6 points: printed nowhere
    ("03_training.ipynb", 62, "2.7", "unbacked"),  # memory figures no output or record backs
    ("03_training.ipynb", 62, "0.6", "unbacked"),
    ("03_training.ipynb", 62, "0.3", "unbacked"),
    ("03_training.ipynb", 62, "0.4", "unbacked"),
    ("06_performance.ipynb", 37, "85.18%", "unbacked"),  # the 13-epoch accuracy
    ("04_evaluation.ipynb", 6, "67.95%", "unbacked"),  # the quick model's accuracy (on Colab it is what 04 uses)
    ("04_evaluation.ipynb", 6, "68%", "unbacked"),
    ("03_training.ipynb", 42, "271.8", "unbacked"),  # "in the previous full run"
    ("03_training.ipynb", 42, "previous full run", "phrase"),
    ("06_performance.ipynb", 40, "300", "unbacked"),  # "the goal was 300 s"
    ("06_performance.ipynb", 40, "the goal was", "phrase"),
    ("06_performance.ipynb", 40, "stretch goal", "phrase"),
    ("06_performance.ipynb", 37, "in notebook 03's run before", "phrase"),
    ("03_training.ipynb", 33, "Smith's *range test*", "phrase"),  # Smith's test is linear and reads accuracy
    ("03_training.ipynb", 69, "Smith, WACV 2017) sweeps the rate exponential", "phrase"),
    ("README.md", None, "Every figure in them is measured by the notebook itself", "phrase"),
]


def materialise_today(tmp_path: Path) -> list[Path]:
    """Write the frozen cells back as notebooks (other cells as empty raw cells, so indices stay) and the README."""
    frozen = json.loads(TODAY.read_text(encoding="utf-8"))
    (tmp_path / "notebooks").mkdir()
    paths = []
    for name, notebook in frozen["notebooks"].items():
        cells = [{"cell_type": "raw", "metadata": {}, "source": ""} for _ in range(notebook["cell_count"])]
        for index, cell in notebook["cells"].items():
            cells[int(index)] = cell
        paths.append(write_notebook(tmp_path / "notebooks" / name, cells))
    readme = tmp_path / "README.md"
    readme.write_text(frozen["readme"], encoding="utf-8")
    return [*paths, readme]


def findings_by_example(reports: list) -> dict[tuple, str]:
    """{(file name, cell, text): status} of every finding, phrases keyed by the start of their text."""
    found = {}
    for report in reports:
        for f in report.findings:
            found[(Path(f.file).name, f.cell, f.text)] = f.status
    return found


def example_found(found: dict[tuple, str], name: str, cell: int | None, text: str, expected: str) -> bool:
    return any(key[0] == name and key[1] == cell and key[2].startswith(text) and value == expected
               for key, value in found.items())


def test_the_issues_examples_are_reported_in_todays_notebooks(tmp_path: Path, no_results: Path) -> None:
    # No records: a frozen test must not depend on what results/ will hold; the cells cite none of the numbers.
    found = findings_by_example(truth.check(materialise_today(tmp_path), results_dir=no_results))
    missing = [example for example in EXAMPLES if not example_found(found, *example)]
    assert missing == []


def test_todays_examples_that_live_in_outputs_are_not_the_prose_checks_to_catch(tmp_path: Path,
                                                                                no_results: Path) -> None:
    # "10 epochs x 195 steps" and "10.39" h are printed by cells of 03 (computed from all 50,000 training images where
    # the recipe trains on the 45,000 of the train split), and 04's two accuracies, 84.40% and 8,435 of 10,000, are both
    # printed: the prose that repeats them is backed. These need a fix in the code (and a test of it), not in the prose.
    paths = materialise_today(tmp_path)
    frozen = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in paths if p.suffix == ".ipynb"}
    outputs = " ".join(text for cell in frozen["03_training.ipynb"]["cells"] for text, _ in truth.output_texts(cell))
    assert "10 epochs x 195 steps" in outputs and "10.39" in outputs
    found = findings_by_example(truth.check(paths, results_dir=no_results))
    assert found[("04_evaluation.ipynb", 12, "8,435")] == "outputs"
    assert found[("04_evaluation.ipynb", 12, "84.40%")] == "outputs"


def test_the_frozen_cells_are_still_reported_in_the_committed_notebooks_while_they_hold_them() -> None:
    # Until the notebooks are rewritten, the check on the committed files must report the same examples: the frozen
    # fixture holds only some of each notebook's outputs, and the full outputs must not back them either.
    frozen = json.loads(TODAY.read_text(encoding="utf-8"))
    names = []
    for name, notebook in frozen["notebooks"].items():
        committed = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))["cells"]
        if all(int(i) < len(committed) and committed[int(i)].get("source") == cell["source"]
               for i, cell in notebook["cells"].items() if cell["cell_type"] == "markdown"):
            names.append(name)
    if not names:
        pytest.skip("the notebooks no longer hold the frozen cells (rewritten): the fixture test above still runs")
    found = findings_by_example(truth.check([ROOT / "notebooks" / name for name in names]))
    missing = [e for e in EXAMPLES if e[0] in names and not example_found(found, *e)]
    assert missing == []


def test_every_number_the_committed_notebooks_and_readme_state_is_backed() -> None:
    # Re-executed notebooks change their outputs: prose that quotes an old output fails here, naming file, cell, number.
    failures = truth.failures()
    assert failures == [], "\n".join(f"{f.file} {f.where()}: {f.status} {f.text!r} in {f.sentence!r}" for f in failures)


# ------------------------------------------------------------------------------------------------------------------
# Freezing today's evidence (run once, by hand, while the notebooks held these cells)

# The markdown cells with the examples and the code cells whose outputs they refer to (cell indices of today).
FROZEN_CELLS = {
    "03_training.ipynb": [13, 18, 19, 21, 33, 41, 42, 62, 63, 65, 69, 72, 74],
    "04_evaluation.ipynb": [6, 7, 9, 11, 12, 13],
    "05_ablations.ipynb": [31, 45],
    "06_performance.ipynb": [0, 8, 28, 34, 37, 40],
}
TEXT_OUTPUTS = ("text/plain", "text/markdown")


def committed(path: str, commit: str) -> str:
    """A file as `commit` holds it (the working tree may hold someone's edits in progress)."""
    return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def freeze() -> None:
    """Write tests/fixtures/truth_today.json from the notebooks and README.md of the last commit."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    notebooks = {}
    for name, indices in FROZEN_CELLS.items():
        cells = json.loads(committed(f"notebooks/{name}", commit))["cells"]
        kept = {}
        for index in indices:
            cell = {**cells[index], "metadata": {}}
            if cell["cell_type"] == "code":  # images, widget state and HTML copies of tables left out: the text stays
                cell["outputs"] = [{**o, "data": {k: v for k, v in o["data"].items() if k in TEXT_OUTPUTS}}
                                   if "data" in o else o for o in cell["outputs"]]
            kept[str(index)] = cell
        notebooks[name] = {"cell_count": len(cells), "cells": kept}
    readme = committed("README.md", commit).split("\n\n")
    TODAY.parent.mkdir(exist_ok=True)
    TODAY.write_text(json.dumps({
        "about": "Issue 27's examples as the notebooks and README.md held them at commit " + commit + ": the "
                 "markdown cells with the stale sentences and the code cells whose outputs they refer to, copied "
                 "verbatim by `python tests/test_truth.py --freeze`, except that code cells keep only their stream and "
                 "text/plain outputs (no images, widgets or HTML copies of tables) and no cell keeps its metadata; "
                 "README.md's first two paragraphs. tests/test_truth.py checks that tools/truth_check.py reports "
                 "every example in them.",
        "commit": commit, "notebooks": notebooks, "readme": "\n\n".join(readme[:2]) + "\n"},
        indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--freeze"]:
        sys.exit("usage: python tests/test_truth.py --freeze   (rewrites tests/fixtures/truth_today.json)")
    freeze()
