#!/usr/bin/env python3
"""The truth check: every number typed into the course's prose must be backed by a run, a record or a cited fact.

    python tools/truth_check.py                        # the six notebooks and README.md; exit 1 if anything is unbacked
    python tools/truth_check.py notebooks/03_training.ipynb --report /tmp/truth.txt
    python tools/truth_check.py --all notebooks/04_evaluation.ipynb  # every number with what backs it (or exempts it)

Exit status: 0 when every number is backed and no banned phrase is left; 1 when something is not (the report lists
it); 2 when an input cannot be read (a notebook that is not valid JSON, a results file or the fact list that cannot be
parsed), with a message naming the file. The rule this enforces, and how to satisfy it, is docs/numbers.md. From
Python: `failures()` (unbacked numbers and banned phrases of the committed files), `unbacked()`, `check()`.

What is read: the source of every markdown cell of a notebook, hints and solutions (`<details>` blocks) included, and
the whole of README.md. Outputs are never checked: they are the evidence. Every number-shaped token of that text is a
*claim* unless an exemption below applies, and a claim is *backed* by the first of:

1. outputs: the same notebook's committed outputs: stream text, text/plain, text/markdown and text/html (a table's
   cells with their column's header as unit; images and widget state ignored). Not for README.md.
2. records: the values of a results/*.json file (numeric leaves, and the numbers and dates inside string leaves), but
   only where the prose names that file (`results/ablations.json`, or `ablations.json`) in the same notebook cell, or
   in the same section of README.md. A record is evidence for the sentences that cite it: matched against every
   record of the folder, a short number like "200 s" finds some run that took 200 s by chance. README.md's own
   Measured section (between `<!-- MEASURED -->` and `<!-- /MEASURED -->`, written from the records by
   benchmarks/measured.py) backs the rest of README.md without a citation.
3. facts: an entry of tools/facts.json: a number no run can change (the paper's figures, CIFAR-10's sizes,
   arithmetic), each with its source, optionally limited to text that matches a pattern within 60 characters of the
   number (`near`), to some files (`files`) and to a unit (`unit`).
4. arithmetic: a written-out calculation whose parts agree, `256x6x6 = 9,216`, `$(227/32)^2 \\approx 50$`,
   `ln(1 + 9/e) ≈ 1.461`: each part is computed and must equal the last number at its precision; then every number
   of the calculation is backed. A calculation that does not compute leaves its numbers to the rules above.

Matching a value "at the precision shown". A claim written with d decimals is backed by a value within half a unit
of its last digit: "84.4%" by 84.40 or 84.43, "1,508 images/s" by 1508 or 1508.2, "15x" by 15.4, "58 million" by
58,322,314. A written sign must agree ("+3.6", "−2.84"); an unsigned claim matches either sign. And:

- units: a unit written after the number (%, points, s, min, h, MB, GB, images/s, x, GFLOP, TFLOP/s ...) gives the
  claim a kind. A value's kind comes from the text after it in an output, its column's header in an HTML table, or its
  key in a record (`*acc*` percent, `*seconds*`, `*_s`, `time_to*` time, `*per_s` speed, `*_mb` memory). Where both
  have a kind they must agree; within a kind the conversion is exact: s, min and h by 60 and 3,600, ms by 1/1,000, MB
  and GB by 1,024 (as tools/before_you_run.py writes them), GFLOP/TFLOP/PFLOP by powers of 1,000. A unit written
  after the last number of a range or a comparison ("218-233 s", "1,508 against 2,335 images/s") is every number's,
  when the numbers are within a factor of 10 of each other ("± 0.7 against 80.6%" leaves the 0.7 without a unit).
- specificity: a claim with a unit and only one or two significant digits ("44 images/s", "x0.65", "2.7 GB", "+3.6
  points") is backed only by a value of its own kind, unless it is negative: such short numbers match a value of
  unknown kind (a loss, a learning rate) too often by chance. Three or more significant digits match any value.
- counts: an integer claim without a unit of measure (a count of images, epochs, steps, runs) is backed only by the
  same integer written without decimals: "5 images more" is not backed by 5.3.
- dates (2026-12-01) and sizes written like `32x32`, `256x6x6` or `227×227` are backed by the same text in the
  evidence; a compound duration ("5 min 19 s") is one claim in seconds.
- facts have no kind unless they declare `unit`; a fact backs only claims of its own kind ("x0.01" is not the paper's
  learning rate 0.01, "48%" is not its 48 kernels).

Exemptions: number-shaped text that is not a claim, counted in the summary under its name:

- code: inline code spans and fenced code blocks: what the reader types, settings and code (a count of epochs or steps
  written in prose is a claim; written as `epochs=3` it is a setting). Transcripts in fenced blocks are not read.
- link: URLs, link targets, HTML tags and HTML comments.
- generated: README.md's blocks that scripts write (`LAUNCH`, `MEASURED` and `RECIPES`); their tests check them.
- heading: the number that opens a heading ("## 10. The upstream recipe", "# 03 — Training").
- list: the marker of an ordered list item ("1. **forward**") or of an exercise ("**4.**").
- reference: numbers after section, notebook, exercise, rung, chapter, figure, table, line, issue, § and similar
  words ("section 10", "notebooks 01, 05 and 06", "rungs 1-4", "§3.3", "step 3 of section 1").
- notebook: a two-digit number with a leading zero (01 to 09), the course's notebook names ("01 · Data", "ran 03").
- year: a year from 1950 to 2035, without a unit, inside parentheses or after a venue (WACV, ICLR, arXiv, tech
  report ...), an author ("et al.", a capitalised name) or a title in italics or quotes.
- version: x.y.z ("2.14.1", "v0.1.0") or a number after a software name ("Python 3.10", "torch>=2.9", "Debian 12").
- formula: an operand inside TeX math (`$1 - ε + ε/10 = 0.91$`: 1 and 10); what follows =, ≈, \\approx, <, > is a claim.
Digits that belong to a name or identifier (CIFAR-10, top-1, ResNet-9, fp16, T4, H100, x86-64, `fc_4`) are not numbers
and are not counted. Numbers written as words ("ten", "a quarter") are not read: qualitative words are what the rule
asks for where a figure would go stale; a figure spelled out to dodge the check is a matter for review.

Banned phrases: tools/facts.json also lists phrases no lesson may contain (project history, a claim the prose does not
keep, a misattribution), each with its reason; a match fails the check like an unbacked number.

The report gives, for each unbacked number, the file, the cell (counted from 0 in the notebook's JSON; README.md: the
line), whether it sits in a hint or a solution, the number and its sentence; and a summary line per file.

Limits: "backed" means that a value of that precision and kind appears in the evidence, not that the sentence reads
it correctly; short and common numbers (small counts, 0.5, 10) can be backed by chance. Outputs are trusted: a cell
that prints a wrong number (a step count computed from the wrong split) is not caught here.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import fnmatch
import json
import math
import operator
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACTS_FILE = ROOT / "tools" / "facts.json"
RESULTS_DIR = ROOT / "results"
MEASURED_START, MEASURED_END = "<!-- MEASURED -->", "<!-- /MEASURED -->"
LAUNCH_START, LAUNCH_END = "<!-- LAUNCH -->", "<!-- /LAUNCH -->"
RECIPES_START, RECIPES_END = "<!-- RECIPES -->", "<!-- /RECIPES -->"
NEAR = 60  # characters each side of a number in which a fact's `near` pattern must match


class TruthCheckError(Exception):
    """An input that cannot be read; the message names the file and what to do."""


# ---------------------------------------------------------------------------------------------------------------
# Units

# unit as written (lower-cased) -> (normalised unit, kind, factor to the kind's base unit)
_UNITS: dict[str, tuple[str, str, float]] = {}
for _names, _norm, _kind, _factor in (
    (("%", "percent", "points", "point", "pp", "percentage points"), "%", "percent", 1.0),
    (("s", "sec", "second", "seconds"), "s", "time", 1.0),
    (("ms",), "ms", "time", 1e-3),
    (("min", "mins", "minute", "minutes"), "min", "time", 60.0),
    (("h", "hour", "hours"), "h", "time", 3600.0),
    (("kb",), "KB", "memory", 1 / 1024),
    (("mb", "mib"), "MB", "memory", 1.0),
    (("gb", "gib"), "GB", "memory", 1024.0),
    (("tb",), "TB", "memory", 1024.0 ** 2),
    (("images/s", "img/s", "image/s", "images per second", "imgs/s", "it/s", "batch/s", "batches/s"), "img/s", "speed",
     1.0),
    (("x", "×", "times", "-fold", "fold"), "x", "ratio", 1.0),
    (("flop", "flops"), "FLOP", "flops", 1.0),
    (("gflop", "gflops"), "GFLOP", "flops", 1e9),
    (("tflop", "tflops"), "TFLOP", "flops", 1e12),
    (("pflop", "pflops"), "PFLOP", "flops", 1e15),
    (("gflop/s",), "GFLOP/s", "flop/s", 1e9),
    (("tflop/s", "tflops/s"), "TFLOP/s", "flop/s", 1e12),
):
    for _name in _names:
        _UNITS[_name] = (_norm, _kind, _factor)
# Units that make an integer a measurement, which may be rounded; any other integer is a count and must match exactly.
MEASURE_KINDS = {"percent", "time", "memory", "speed", "ratio", "flops", "flop/s"}
# Other words that can follow a number and carry no conversion: kept as the claim's unit for the report.
_UNIT_AFTER = re.compile(
    r"\s?(?P<unit>%|percentage points|images per second|(?:images|image|imgs|img|batches|batch|it)/s"
    r"|[GT]?FLOPS?/s|-fold|×(?!\s?\d)|x(?![\w\d])"
    r"|(?:points?|pp|percent|seconds?|secs?|s|ms|mins?|minutes?|h|hours?|[KMGT]i?B|[GTP]?FLOPs?|px|pixels"
    r"|epochs?|steps?|images?|batch(?:es)?|seeds?|runs?|classes|layers|parameters|params|threads|cores|bits|bytes"
    r"|nats|times|fold)(?![\w/]))")
_SUFFIX_UNITS = {"x": "x", "×": "x", "s": "s", "ms": "ms", "h": "h", "min": "min", "px": "px", "m": "M", "k": "k",
                 "kb": "KB", "mb": "MB", "gb": "GB", "tb": "TB", "st": "", "nd": "", "rd": "", "th": ""}
_MULTIPLIERS = {"M": 1e6, "k": 1e3}
_MULTIPLIER_WORD = re.compile(r"\s(thousand|million|billion)\b", re.I)


def unit_info(unit: str) -> tuple[str, float]:
    """(kind, factor to the kind's base unit) of a unit as written; ("", 1) for no unit or a plain count word."""
    if not unit:
        return "", 1.0
    found = _UNITS.get(unit.lower()) or _UNITS.get(unit)
    return (found[1], found[2]) if found else ("", 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True)
class Token:
    """One number-shaped piece of text: where it is, what it says and at which precision."""

    start: int
    end: int
    text: str
    kind: str  # number, date, size, version, duration
    value: float | None = None
    step: float = 1.0  # the precision shown: half of it is the tolerance
    sign: str = ""  # "+" or "-" when written, else ""
    unit: str = ""
    integer: bool = False


_CANDIDATE = re.compile(
    r"(?P<date>(?<!\d)\d{4}-\d{2}-\d{2}(?!\d))"
    r"|(?P<version>(?<![\d.])\d+\.\d+\.\d+(?:[+.][0-9A-Za-z]+)*)"
    r"|(?P<size>(?<![\d.])\d+(?:\.\d+)?(?:(?:x|\s?×\s?)\d+(?:\.\d+)?)+(?!\d|\.\d))"
    r"|(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d|,\d)|\d+(?:\.\d+)?(?:e[-−]?\d+)?)"
)
_MINUS = "−–-"


def _precision(body: str) -> tuple[float, float, bool]:
    """(value, step, integer) of a plain number as written: "84.40" -> (84.4, 0.01, False)."""
    plain = body.replace(",", "").replace("−", "-")
    mantissa, _, exponent = plain.partition("e")
    decimals = len(mantissa.partition(".")[2])
    value = float(plain)
    step = 10.0 ** -decimals * (10.0 ** int(exponent) if exponent else 1.0)
    return value, step, decimals == 0 and not exponent


def tokens(text: str) -> list[Token]:
    """Every number-shaped token of `text`, with its sign and the unit written after it; digits of names are skipped."""
    found: list[Token] = []
    name_end = -2  # where the last name ended: "x86-64" continues it
    for match in _CANDIDATE.finditer(text):
        start, end = match.span()
        if start == name_end + 1 and text[name_end] in "-–":
            name_end = end
            continue
        before = text[start - 1] if start else ""
        before2 = text[start - 2] if start > 1 else ""
        if match.lastgroup == "date":
            found.append(Token(start, end, match.group(), "date"))
            continue
        if match.lastgroup == "version":
            found.append(Token(start, end, match.group(), "version"))
            continue
        sign, ratio_prefix = "", False
        if before in "x×" and before and not (before2.isalnum() or before2 == "_"):
            ratio_prefix = True  # "x0.65", "(×1.33": a ratio written before the number
        elif before.isalpha() or before == "_":
            continue  # bf16, H100, fc_4, cu130: part of a name
        elif before in _MINUS + "+" and before:
            if before2.isalpha() or before2 == "_":
                continue  # CIFAR-10, top-1, ILSVRC-2010, ResNet-9
            if not before2.isdigit() and before2 not in ")]%":
                sign = "+" if before == "+" else "-"
        elif before == "." and before2.isdigit():
            continue
        rest = text[end:end + 24]
        if ratio_prefix and re.match(r"-\w", rest):
            name_end = end
            continue  # x86-64: a name, not a ratio
        suffix = re.match(r"[A-Za-z_]+", rest)
        unit = ""
        if suffix:
            word = suffix.group()
            if word.lower() in _SUFFIX_UNITS and not re.match(r"[A-Za-z_]+\d", rest):
                unit = _SUFFIX_UNITS[word.lower()]
                end += len(word)
            else:
                continue  # 3conv, 2D, 1st-party ...: an identifier, not a number
        if match.lastgroup == "size":
            found.append(Token(start, end, match.group(), "size", sign=sign))
            continue
        value, step, integer = _precision(match.group())
        if unit in _MULTIPLIERS:
            value, step, integer = value * _MULTIPLIERS[unit], step * _MULTIPLIERS[unit], False
            unit = ""
        word = _MULTIPLIER_WORD.match(text, end)
        if not unit and word:  # "58 million": the precision is a million
            factor = 10.0 ** (3 * ("thousand", "million", "billion").index(word.group(1).lower()) + 3)
            value, step, integer = value * factor, step * factor, False
            end = word.end()
        if not unit:
            after = _UNIT_AFTER.match(text, end)
            if after:
                unit = after.group("unit")
                if unit == "%" and after.start("unit") == end:
                    end = after.end()  # "84.40%" reads as one token in the report
                if unit in ("×", "x") and ratio_prefix:
                    unit = "x"
        if ratio_prefix:
            unit = "x"
        if sign == "-":
            value = -value
        found.append(Token(start - (1 if sign else 0) - (1 if ratio_prefix else 0), end,
                           text[start - (1 if sign else 0) - (1 if ratio_prefix else 0):end], "number", value, step,
                           sign, _normal_unit(unit), integer))
    return _ranges(text, _durations(text, found))


def _normal_unit(unit: str) -> str:
    found = _UNITS.get(unit.lower()) or _UNITS.get(unit)
    return found[0] if found else unit.lower()


_DURATION_PART = re.compile(r"\s?(?:h|hours?|min|mins|minutes?)\s+(?:and\s+)?$")


def _durations(text: str, found: list[Token]) -> list[Token]:
    """Merge "5 min 19 s" and "1 h 20 min" into one claim in seconds."""
    merged: list[Token] = []
    for token in found:
        previous = merged[-1] if merged else None
        if (previous is not None and token.kind == previous.kind == "number" and previous.unit in ("h", "min")
                and token.unit in ("min", "s") and unit_info(token.unit)[1] < unit_info(previous.unit)[1]
                and _DURATION_PART.match(text[previous.end:token.start]) and previous.value is not None
                and token.value is not None):
            seconds = previous.value * unit_info(previous.unit)[1] + token.value * unit_info(token.unit)[1]
            unit_text = _UNIT_AFTER.match(text, token.end)
            end = unit_text.end() if unit_text else token.end
            merged[-1] = Token(previous.start, end, text[previous.start:end], "duration", seconds,
                               token.step * unit_info(token.unit)[1], "", "s", False)
            continue
        merged.append(token)
    return merged


_RANGE_JOIN = re.compile(r"\s*(?:-|–|−|to|against|vs\.?|versus|and|or)\s*$")


def _ranges(text: str, found: list[Token]) -> list[Token]:
    """Give a number without a unit the unit of the next number when only a range or a comparison separates them.

    Only between numbers of one magnitude (a factor of 10 at most): "218-233 s", "1,508 against 2,335 images/s";
    not "± 0.7 against 80.6%", where the 0.7 is a standard deviation.
    """
    out = list(found)
    for i in range(len(out) - 2, -1, -1):
        here, after = out[i], out[i + 1]
        if (here.kind == "number" and not here.unit and after.kind in ("number", "duration") and after.unit
                and here.value and after.value and 0.1 <= abs(here.value / after.value) <= 10
                and _RANGE_JOIN.match(text[here.end:after.start])):
            out[i] = Token(here.start, here.end, here.text, here.kind, here.value, here.step, here.sign, after.unit,
                           here.integer)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Markdown: what is prose, what is exempt


@dataclass(frozen=True)
class Region:
    """A span of markdown whose numbers are exempt (code, links, generated blocks) or read specially (math)."""

    start: int
    end: int
    rule: str


_FENCE = re.compile(r"^([ \t]*)(```+|~~~+)[^\n]*\n.*?(?:^\1\2[ \t]*$|\Z)", re.M | re.S)
_INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
_LINK_TARGET = re.compile(r"\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")
_URL = re.compile(r"<?https?://[^\s)>\]]+>?")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_HTML_TAG = re.compile(r"</?[A-Za-z][^>\n]*>")
_MATH = re.compile(r"\$\$.+?\$\$|(?<![\\$])\$(?!\s)[^$\n]+?(?<![\s\\])\$", re.S)


def regions(text: str) -> list[Region]:
    """The exempt and special spans of one markdown text, first found first kept (code before links before math)."""
    taken: list[Region] = []

    def add(pattern: re.Pattern[str], rule: str) -> None:
        for m in pattern.finditer(text):
            if not any(r.start < m.end() and m.start() < r.end for r in taken):
                taken.append(Region(m.start(), m.end(), rule))

    add(_FENCE, "code")
    add(_HTML_COMMENT, "link")
    add(_INLINE_CODE, "code")
    add(_LINK_TARGET, "link")
    add(_URL, "link")
    add(_HTML_TAG, "link")
    add(_MATH, "math")
    return sorted(taken, key=lambda r: r.start)


def _mask(text: str, spans: Iterable[Region], keep: Iterable[str] = ()) -> str:
    """`text` with every span blanked out (same length), except spans whose rule is in `keep`."""
    chars = list(text)
    for r in spans:
        if r.rule not in keep:
            chars[r.start:r.end] = " " * (r.end - r.start)
    return "".join(chars)


_REF_WORDS = (r"sections?|notebooks?|exercises?|rungs?|chapters?|parts?|items?|cells?|appendix|figures?|fig\.|"
              r"tables?|equations?|eq\.|issues?|§|questions?|lines?|steps?(?=\s+\d+\s+of\b)")
# A section, notebook or exercise number is short; "section 2, 84.40%" goes on with a claim, not another reference.
_REF_NUMBER = r"(?:§\s*)?\d{1,3}(?:\.\d{1,2})*(?![\d%]|\.\d|,\d|\s?%)"
_REFERENCE = re.compile(
    rf"(?<![\w-])(?:{_REF_WORDS})\s*(?P<nums>{_REF_NUMBER}(?:\s*(?:,\s*(?:and\s+|or\s+)?|and|or|to|-|–|&)\s*"
    rf"{_REF_NUMBER})*)", re.I)
_HEADING_NUMBER = re.compile(r"^[ \t]*#{1,6}[ \t]+(?:\*\*)?(?:Exercise\s+)?(?P<num>\d+(?:\.\d+)*)", re.M | re.I)
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*][ \t]+)?(?P<num>\d+)\.(?=[ \t])|^[ \t]*\*\*(?P<ex>\d+)\.\*\*", re.M)
_VENUE = re.compile(
    r"(?:\bet al\.?|\bWACV|\bICLR|\bICML|\bNeurIPS|\bNIPS|\bCVPR|\bICCV|\bECCV|\bAAAI|\bMLSys|\bSPIE|\bJMLR|\barXiv|"
    r"\btech(?:nical)? report|\breport|\bProceedings|\bJanuary|\bFebruary|\bMarch|\bApril|\bMay|\bJune|\bJuly|"
    r"\bAugust|\bSeptember|\bOctober|\bNovember|\bDecember|[*\"”’],?|[A-Z][a-z]+(?: (?:&|and) [A-Z][a-z]+)?,?)\s*$")
_SOFTWARE = re.compile(
    r"(?:\b(?:python|torch|pytorch|torchvision|numpy|pandas|matplotlib|seaborn|ipywidgets|jupyterlab|"
    r"jupyterlab_widgets|ipykernel|nbval|nbclient|nbformat|pytest|pip|ruff|hypothesis|playwright|chromium|cuda|"
    r"cudnn|debian|ubuntu|setuptools|tqdm|pillow|jupyter|node|version|versions|v)\s*(?:[<>=~!]=?|≥|≤)?\s*\**|\bv)$",
    re.I)


def _claims_in_math(text: str, region: Region) -> set[int]:
    """Start offsets of the tokens in a TeX math span that follow a relation (=, ≈, \\approx, <, >, \\le, \\ge)."""
    claimed = set()
    body = text[region.start:region.end]
    for m in re.finditer(r"(?:=|≈|\\approx|\\simeq|\\sim|<|>|\\le(?:q)?|\\ge(?:q)?|≤|≥)\s*(?:\\,)?\s*", body):
        nxt = re.match(r"[−+-]?\d", body[m.end():])
        if nxt:
            claimed.add(region.start + m.end())
    return claimed


# ---------------------------------------------------------------------------------------------------------------
# Arithmetic written out in the prose


_ARITH_RUN = re.compile(
    r"(?:(?<![A-Za-z])(?:ln|log|sqrt|exp|e|π)(?![A-Za-z])|\d[\d,.]*|[-−+*/×·^()\s=≈]|x(?=\s*\d)|\\approx|\\ln|"
    r"\\log|\\times|\\cdot|\\left|\\right|[{}])+")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}
_FUNCS = {"ln": math.log, "log": math.log, "sqrt": math.sqrt, "exp": math.exp}


def _evaluate(expression: str) -> float | None:
    """The value of a small arithmetic expression (numbers, + - * / ^, ln, log, sqrt, exp, e, π), or None."""
    py = (expression.replace("\\approx", "").replace("\\ln", "ln").replace("\\log", "log").replace("\\times", "*")
          .replace("\\cdot", "*").replace("\\left", "").replace("\\right", "").replace("{", "(").replace("}", ")")
          .replace("−", "-").replace("×", "*").replace("·", "*").replace("^", "**").replace("π", "pi"))
    py = re.sub(r"(?<=\d),(?=\d{3})", "", py)
    py = re.sub(r"(?<=[\d)])\s*x\s*(?=[\d(])", "*", py)
    py = re.sub(r"\b(ln|log|sqrt|exp)\s+(\d+(?:\.\d+)?)", r"\1(\2)", py)  # "ln 10"
    try:
        tree = ast.parse(py.strip(), mode="eval")
    except SyntaxError:
        return None

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in ("e", "pi"):
            return math.e if node.id == "e" else math.pi
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and len(node.args) == 1 and not node.keywords):
            return _FUNCS[node.func.id](value(node.args[0]))
        raise ValueError("not arithmetic")

    try:
        result = value(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return result if math.isfinite(result) else None


def arithmetic_spans(text: str) -> list[tuple[int, int]]:
    """Spans of written-out calculations whose parts all evaluate to the last number at its precision."""
    spans = []
    for m in _ARITH_RUN.finditer(text):
        run = m.group()
        if not re.search(r"=|≈|\\approx", run) or not re.search(r"\d", run):
            continue
        parts = re.split(r"=|≈|\\approx", run)
        last = parts[-1].strip().rstrip(".,)")
        last_match = re.match(r"[−-]?\d[\d,]*(?:\.\d+)?", last)
        if not last_match or len(parts) < 2:
            continue
        target, step, _ = _precision(last_match.group().replace("−", "-"))
        evaluated = [_evaluate(p.strip().strip(",")) for p in parts[:-1]]
        operators_used = any(re.search(r"[-−+*/×·^x]|ln|log|sqrt|exp|\\times|\\cdot", p) for p in parts[:-1])
        if operators_used and evaluated and all(v is not None and abs(v - target) <= step / 2 + 1e-9 for v in evaluated):
            spans.append((m.start(), m.start() + len(run.rstrip())))
    return spans


# ---------------------------------------------------------------------------------------------------------------
# Evidence


@dataclass
class Evidence:
    """Numbers (signed value, with the unit's kind and factor) and exact strings that can back a claim."""

    by_kind: dict[str, list[float]] = field(default_factory=dict)  # base-unit values per kind, sorted on freeze
    raw: dict[str, list[float]] = field(default_factory=dict)  # values as written per kind
    integers: set[int] = field(default_factory=set)  # integers written without decimals
    strings: set[str] = field(default_factory=set)  # dates, sizes, versions
    where: str = ""

    def add(self, value: float, unit: str = "", integer: bool = False) -> None:
        """One number, with the unit it was written with (or its key's unit, for a record)."""
        kind, factor = unit_info(unit)
        self.by_kind.setdefault(kind, []).append(value * factor)
        self.raw.setdefault(kind, []).append(value)
        if integer and float(value).is_integer():
            self.integers.add(int(value))

    def add_text(self, text: str, unit: str = "") -> None:
        """Every number and date of a piece of output or record text; `unit` for numbers written without one."""
        for token in tokens(text):
            if token.kind in ("number", "duration") and token.value is not None:
                self.add(token.value, token.unit or unit, token.integer)
            elif token.kind in ("date", "size", "version"):
                self.strings.add(_normal_string(token.text))

    def freeze(self) -> Evidence:
        """Sort the value lists for the searches below."""
        for lists in (self.by_kind, self.raw):
            for values in lists.values():
                values.sort()
        return self

    def backs(self, claim: Token) -> bool:
        """Whether a value of this evidence backs `claim` at the precision it shows."""
        if claim.kind in ("date", "size", "version"):
            text = _normal_string(claim.text)
            return text in self.strings or (claim.kind == "version" and any(s.startswith(text) for s in self.strings))
        if claim.value is None:
            return False
        if claim.integer and unit_info(claim.unit)[0] not in MEASURE_KINDS:
            wanted = {int(claim.value)} if claim.sign else {int(claim.value), -int(claim.value)}
            return bool(wanted & self.integers)
        targets = [claim.value] if claim.sign else [claim.value, -claim.value]
        kind, factor = unit_info(claim.unit)
        tolerance = claim.step / 2 + 1e-9 * max(1.0, abs(claim.value))
        # A measurement with one or two significant digits ("44 images/s", "x0.65", "2.7 GB") matches a value of an
        # unknown unit too often by chance: it needs a value of its own kind.
        # A written minus sign is specific enough on its own: few values are negative.
        unitless_ok = not kind or significant_digits(claim.text) >= 3 or claim.sign == "-"
        for target in targets:
            if kind:
                if _near(self.by_kind.get(kind, []), target * factor, tolerance * factor):
                    return True
                if unitless_ok and _near(self.raw.get("", []), target, tolerance):
                    return True
            elif any(_near(values, target, tolerance) for values in self.raw.values()):
                return True
        return False


def significant_digits(text: str) -> int:
    """Significant digits of a number as written: "0.65" 2, "1,508" 4, "200" 1, "85.00" 4."""
    body = re.search(r"\d[\d,]*(?:\.\d+)?", text)
    if not body:
        return 0
    digits = body.group().replace(",", "")
    if "." in digits:
        return len(digits.replace(".", "").lstrip("0"))
    return len(digits.strip("0")) or 1


def _near(values: list[float], target: float, tolerance: float) -> bool:
    i = bisect.bisect_left(values, target - tolerance)
    return i < len(values) and values[i] <= target + tolerance


def _normal_string(text: str) -> str:
    return re.sub(r"\s+", "", text.replace("×", "x"))


def _text(source: str | list[str]) -> str:
    return "".join(source) if isinstance(source, list) else source


class _Tables(HTMLParser):
    """The cells of the HTML tables of an output, each with the header of its column (pandas' layout)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: list[tuple[str, str]] = []  # (text, its column's header)
        self.outside: list[str] = []  # text outside tables
        self._header: list[str] | None = None
        self._row: list[str] = []
        self._in_head = self._in_cell = self._in_style = False
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "style":
            self._in_style = True
        elif tag == "table":
            self._depth += 1
            self._header = None
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._in_cell = True
            self._row.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        elif tag == "table":
            self._depth -= 1
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th"):
            self._in_cell = False
        elif tag == "tr" and self._depth:
            if self._in_head:
                if self._header is None:  # the first header row names the columns; later ones name the index
                    self._header = list(self._row)
            else:
                header = self._header or []
                for i, text in enumerate(self._row):
                    self.cells.append((text, header[i] if i < len(header) else ""))

    def handle_data(self, data: str) -> None:
        if self._in_style:
            return
        if self._depth and self._in_cell and self._row:
            self._row[-1] += data
        elif not self._depth:
            self.outside.append(data)


def header_unit(header: str) -> str:
    """The unit a table column's header gives its numbers ("img/s on cpu" -> img/s, "x previous" -> x), or ""."""
    h = header.strip().lower()
    for pattern, unit in ((r"img/s|images/s|per_s|images per s", "img/s"), (r"^x\b|\bx previous|ratio|speed-?up|×", "x"),
                          (r"\bhours?\b|\bh\b", "h"), (r"\bseconds?\b|\bs to\b|\(s\)|\bs$|_s$|\btime\b", "s"),
                          (r"\bmb\b|_mb\b", "MB"), (r"\bgb\b", "GB"), (r"%|\bacc|accuracy|percent", "%"),
                          (r"\bgflops?\b", "GFLOP"), (r"\bflops?\b", "FLOP")):
        if re.search(pattern, h):
            return unit
    return ""


def output_texts(cell: dict) -> Iterator[tuple[str, str]]:
    """(text, default unit) of a code cell's outputs: stream, text/plain, text/markdown, HTML table cells and text."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            yield _text(output.get("text", "")), ""
        elif output.get("output_type") == "error":
            yield "\n".join(output.get("traceback", [])), ""
        data = output.get("data", {})
        for kind in ("text/plain", "text/markdown"):
            if kind in data:
                yield _text(data[kind]), ""
        if "text/html" in data:
            tables = _Tables()
            tables.feed(_text(data["text/html"]))
            yield " ".join(tables.outside), ""
            for text, header in tables.cells:
                yield text, header_unit(header)


def notebook_evidence(notebook: dict) -> Evidence:
    """Everything a notebook's committed outputs show."""
    evidence = Evidence(where="outputs")
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            for text, unit in output_texts(cell):
                evidence.add_text(text, unit)
    return evidence.freeze()


def _key_unit(path: tuple[str, ...]) -> str:
    key = path[-1].lower() if path else ""
    joined = "/".join(path).lower()
    if key.endswith("per_s") or "images_per" in key:
        return "img/s"
    if "acc" in key:
        return "%"
    if "seconds" in joined or key.endswith("_s") or "time_to" in joined:
        return "s"
    if key.endswith("_mb") or key == "mb":
        return "MB"
    return ""


def _leaves(value: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item, path)
    else:
        yield path, value


def read_json(path: Path, what: str) -> object:
    """Parse a JSON file, or raise TruthCheckError naming it and what to do."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TruthCheckError(f"{path}: {what} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TruthCheckError(f"{path}: {what} cannot be read ({err}); fix its permissions or restore it") from None
    except json.JSONDecodeError as err:
        raise TruthCheckError(f"{path}: {what} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                              f"fix it or restore it with git checkout -- {path}") from None


def record_evidence(results_dir: Path = RESULTS_DIR) -> dict[str, Evidence]:
    """The values of each results/*.json, by file name; an unreadable file raises TruthCheckError naming it."""
    records = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        evidence = Evidence(where="records")
        for key_path, value in _leaves(read_json(path, "results file")):
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, (int, float)):
                evidence.add(float(value), _key_unit(key_path), isinstance(value, int))
            elif isinstance(value, str):
                evidence.add_text(value)
        records[path.name] = evidence.freeze()
    return records


def cited_records(scope: str, records: dict[str, Evidence]) -> list[Evidence]:
    """The records whose file name (`ablations.json`, `results/ablations.json`) the text of `scope` mentions."""
    return [evidence for name, evidence in records.items() if re.search(rf"(?<![\w-]){re.escape(name)}", scope)]


# ---------------------------------------------------------------------------------------------------------------
# Facts and banned phrases


@dataclass(frozen=True)
class Fact:
    """A number no run can change, with its source; `near` limits it to matching sentences, `files` to some files."""

    values: tuple[float, ...]
    strings: tuple[str, ...]
    source: str
    near: re.Pattern[str] | None
    files: tuple[str, ...]
    unit: str = ""
    what: str = ""

    def applies(self, file: str, nearby: str) -> bool:
        """Whether this fact may back a number in `file` (relative to the repository) with `nearby` text around it."""
        if self.files and not file_matches(file, self.files):
            return False
        return self.near is None or bool(self.near.search(nearby))


@dataclass(frozen=True)
class Phrase:
    """Text no lesson may contain, with the reason."""

    pattern: re.Pattern[str]
    why: str
    files: tuple[str, ...]


def file_matches(file: str, patterns: Iterable[str]) -> bool:
    """Whether `file` (relative to the repository, or a path ending like one) matches one of the globs."""
    return any(fnmatch.fnmatch(file, p) or fnmatch.fnmatch(file, "*/" + p) for p in patterns)


def load_facts(path: Path = FACTS_FILE) -> tuple[list[Fact], list[Phrase]]:
    """The fact list and the banned phrases; an entry without a source, or a bad pattern, raises TruthCheckError."""
    data = read_json(Path(path), "fact list")
    if not isinstance(data, dict) or not isinstance(data.get("facts"), list):
        raise TruthCheckError(f"{path}: the fact list must be an object with a list under \"facts\"")
    facts, phrases = [], []
    for i, entry in enumerate(data["facts"]):
        where = f"{path}: facts[{i}]"
        if not isinstance(entry, dict) or not str(entry.get("source", "")).strip():
            raise TruthCheckError(f"{where}: every fact needs a \"source\" (its citation or its arithmetic)")
        raw = entry.get("values", [entry["value"]] if "value" in entry else [])
        values, strings = [], []
        for item in raw if isinstance(raw, list) else [raw]:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                values.append(float(item))
            elif isinstance(item, str) and re.fullmatch(r"[\d.]+(?:\s?[x×]\s?[\d.]+)+|\d{4}-\d{2}-\d{2}", item):
                strings.append(_normal_string(item))
            elif isinstance(item, str) and _evaluate(item) is not None:
                values.append(_evaluate(item))  # arithmetic, e.g. "ln(10)" or "(227/32)^2"
            else:
                raise TruthCheckError(f"{where}: value {item!r} is neither a number, a size like 32x32, nor arithmetic")
        if not values and not strings:
            raise TruthCheckError(f"{where}: no \"value\" or \"values\"")
        unit = str(entry.get("unit", ""))
        if unit and not _fact_kind(unit):
            raise TruthCheckError(f"{where}: unknown unit {unit!r} (use %, s, min, h, MB, GB, img/s, x, GFLOP, TFLOP/s ...)")
        facts.append(Fact(tuple(values), tuple(strings), str(entry["source"]), _pattern(entry.get("near"), where),
                          tuple(entry.get("files", [])), unit, str(entry.get("what", ""))))
    for i, entry in enumerate(data.get("phrases", [])):
        where = f"{path}: phrases[{i}]"
        if not isinstance(entry, dict) or not entry.get("why") or not entry.get("pattern"):
            raise TruthCheckError(f"{where}: every phrase needs a \"pattern\" and a \"why\"")
        phrases.append(Phrase(_pattern(entry["pattern"], where), str(entry["why"]), tuple(entry.get("files", []))))
    return facts, phrases


def _pattern(text: str | None, where: str) -> re.Pattern[str] | None:
    if text is None:
        return None
    try:
        return re.compile(text, re.I | re.S)
    except re.error as err:
        raise TruthCheckError(f"{where}: bad regular expression {text!r} ({err})") from None


def _fact_kind(unit: str) -> str:
    """The kind of unit a fact and a claim must share: a measurement kind, or "" for none."""
    kind = unit_info(unit)[0]
    return kind if kind in MEASURE_KINDS else ""


def fact_backs(facts: list[Fact], claim: Token, file: str, nearby: str) -> Fact | None:
    """The first fact that backs `claim`, given the text around it, or None."""
    for fact in facts:
        if not fact.applies(file, nearby):
            continue
        if claim.kind in ("date", "size") and _normal_string(claim.text) in fact.strings:
            return fact
        if claim.value is None or claim.kind not in ("number", "duration"):
            continue
        claim_factor, fact_factor = unit_info(claim.unit)[1], unit_info(fact.unit)[1]
        if _fact_kind(claim.unit) != _fact_kind(fact.unit):
            continue  # "x0.01" is not the paper's learning rate 0.01; "48%" is not 48 kernels
        tolerance = claim.step / 2 + 1e-9 * max(1.0, abs(claim.value))
        targets = [claim.value] if claim.sign else [claim.value, -claim.value]
        if any(abs(v * fact_factor - t * claim_factor) <= tolerance * claim_factor for v in fact.values for t in targets):
            return fact
    return None


# ---------------------------------------------------------------------------------------------------------------
# Checking


@dataclass(frozen=True)
class Finding:
    """One number (or banned phrase) of the prose and what backs it."""

    file: str
    cell: int | None  # None for README.md
    block: str  # "hint", "solution" or "" (a <details> block's summary, lower-cased)
    text: str
    sentence: str
    status: str  # outputs, records, facts, arithmetic, exempt:<rule>, unbacked, phrase
    detail: str = ""

    def where(self) -> str:
        """"cell 19 (solution)" or "line 5" style location for the report."""
        place = f"cell {self.cell}" if self.cell is not None else self.detail.split(";")[0]
        return place + (f" ({self.block})" if self.block else "")


@dataclass
class FileReport:
    """The findings of one file."""

    file: str
    findings: list[Finding]

    def counts(self) -> Counter[str]:
        """How many findings of each status."""
        return Counter(f.status for f in self.findings)

    def summary(self) -> str:
        """One line: numbers found, backed by outputs / records / facts / arithmetic, exempt, unbacked."""
        counts = self.counts()
        numbers = sum(n for status, n in counts.items() if status != "phrase")
        exempt = {status.split(":", 1)[1]: n for status, n in counts.items() if status.startswith("exempt:")}
        exempt_text = ", ".join(f"{rule} {n}" for rule, n in sorted(exempt.items(), key=lambda kv: -kv[1]))
        return (f"{self.file}: {numbers} numbers: backed by outputs {counts['outputs']}, records {counts['records']}, "
                f"facts {counts['facts']}, arithmetic {counts['arithmetic']}; exempt {sum(exempt.values())}"
                + (f" ({exempt_text})" if exempt_text else "")
                + f"; UNBACKED {counts['unbacked']}; banned phrases {counts['phrase']}")


def _sentence(text: str, start: int, end: int) -> str:
    """The sentence (or table row, or list item) around text[start:end], whitespace collapsed."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    if text[line_start:line_end].lstrip().startswith("|"):
        return " ".join(text[line_start:line_end].split())
    stops = [m.end() for m in re.finditer(r"(?<!\b[A-Z])(?<!\bet al)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)[.!?](?=\s+[A-Z*(`$_\[])"
                                          r"|\n\s*\n|\n[ \t]*(?:[-*]|\d+\.)[ \t]|\n[ \t]*#|\n[ \t]*\|", text)]
    left = max([s for s in stops if s <= start], default=0)
    right = min([s for s in stops if s > end], default=len(text))
    sentence = " ".join(text[left:right].split())
    if len(sentence) > 320:
        local = start - left
        sentence = "…" + sentence[max(0, local - 150):local + 150] + "…"
    return sentence


def _blocks(text: str) -> list[tuple[int, int, str]]:
    """(start, end, label) of each <details> block, labelled by its summary ("hint", "solution")."""
    found = []
    for m in re.finditer(r"<details[^>]*>(.*?)(?:</details>|\Z)", text, re.S | re.I):
        summary = re.search(r"<summary[^>]*>(.*?)</summary>", m.group(1), re.S | re.I)
        label = re.sub(r"<[^>]+>|\W+", " ", summary.group(1)).strip().lower() if summary else "details"
        found.append((m.start(), m.end(), label))
    return found


def check_markdown(text: str, file: str, cell: int | None, evidence: list[Evidence], records: dict[str, Evidence],
                   facts: list[Fact], phrases: list[Phrase], generated: Iterable[tuple[int, int]] = (),
                   scopes: Iterable[tuple[int, int]] = ()) -> list[Finding]:
    """The findings of one markdown text (a cell's source, or README.md).

    `evidence` backs every number (a notebook's outputs); a record backs a number only where its scope (the whole
    text, or the span of `scopes` that holds the number: README's sections) names the record's file.
    """
    spans = regions(text)
    generated, scopes = list(generated), list(scopes) or [(0, len(text))]
    cited = [cited_records(text[s:e], records) for s, e in scopes]
    prose = _mask(text, spans, keep=("math",))
    blocks = _blocks(text)
    arithmetic = arithmetic_spans(_mask(text, spans, keep=("math",)))
    exempt_at: dict[int, str] = {}
    for m in _HEADING_NUMBER.finditer(prose):
        exempt_at[m.start("num")] = "heading"
    for m in _LIST_MARKER.finditer(prose):
        exempt_at[m.start("num") if m.group("num") else m.start("ex")] = "list"
    for m in _REFERENCE.finditer(prose):
        for n in re.finditer(r"\d+(?:\.\d+)*", m.group("nums")):
            exempt_at.setdefault(m.start("nums") + n.start(), "reference")
    math_claims = set()
    for r in spans:
        if r.rule == "math":
            math_claims |= _claims_in_math(text, r)

    def locate(pos: int) -> tuple[str, str]:
        block = next((label for s, e, label in blocks if s <= pos < e), "")
        line = text.count("\n", 0, pos) + 1
        return block, f"line {line}"

    findings: list[Finding] = []

    def found(token_text: str, start: int, end: int, status: str, detail: str = "") -> None:
        block, line = locate(start)
        findings.append(Finding(file, cell, block, token_text, _sentence(text, start, end), status,
                                line + (f"; {detail}" if detail else "")))

    # Exempt spans: count their numbers under the span's rule (code, link); generated blocks likewise.
    for r in spans:
        if r.rule != "math":
            for t in tokens(text[r.start:r.end]):
                found(t.text, r.start + t.start, r.start + t.end, f"exempt:{r.rule}")
    for token in tokens(prose):
        start, end = token.start, token.end
        if any(s <= start < e for s, e in generated):
            found(token.text, start, end, "exempt:generated")
            continue
        in_math = next((r for r in spans if r.rule == "math" and r.start <= start < r.end), None)
        nearby = " ".join(text[max(0, start - NEAR):end + NEAR].split())  # where a fact's `near` must match
        rule = _exemption(prose, token, exempt_at)
        if rule:
            found(token.text, start, end, f"exempt:{rule}")
        elif any(s <= start < e for s, e in arithmetic):
            found(token.text, start, end, "arithmetic")
        elif in_math is not None and start not in math_claims and start - 1 not in math_claims:
            found(token.text, start, end, "exempt:formula")
        else:
            scope = next((i for i, (s, e) in enumerate(scopes) if s <= start < e), 0)
            source = next((e.where for e in [*evidence, *cited[scope]] if e.backs(token)), "")
            if source:
                found(token.text, start, end, source)
            else:
                fact = fact_backs(facts, token, file, nearby)
                found(token.text, start, end, "facts" if fact else "unbacked", fact.what or fact.source if fact else "")
    flat = re.sub(r"\s", " ", prose)  # same length: a phrase may run over a line break
    for phrase in phrases:
        if not phrase.files or file_matches(file, phrase.files):
            for m in phrase.pattern.finditer(flat):
                found(m.group(), m.start(), m.end(), "phrase", phrase.why)
    return findings


def _exemption(prose: str, token: Token, exempt_at: dict[int, str]) -> str:
    """The name of the exemption that applies to `token`, or ""."""
    start = token.start + (1 if token.sign else 0) + (1 if token.text[:1] in "x×" else 0)
    if start in exempt_at:
        return exempt_at[start]
    if token.kind == "version" or _SOFTWARE.search(prose[max(0, start - 40):start]):
        return "version"
    if token.kind == "number" and re.fullmatch(r"0\d", token.text) and not token.unit:
        return "notebook"
    if (token.kind == "number" and token.integer and not token.sign and token.value is not None
            and 1950 <= token.value <= 2035 and "," not in token.text and not token.unit):
        before = prose[max(0, start - 60):start]
        after = prose[token.end:token.end + 2]
        inside_parens = before.rfind("(") > before.rfind(")")
        if inside_parens or after.startswith(")") or _VENUE.search(before):
            return "year"
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Files


def relative(path: Path) -> str:
    """`path` relative to the repository when it is inside it, else as given (POSIX separators)."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return Path(path).as_posix()


def read_notebook(path: Path) -> dict:
    """A notebook's JSON; not valid JSON, or not a notebook, raises TruthCheckError naming the file."""
    notebook = read_json(Path(path), "notebook")
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise TruthCheckError(f"{path}: not a Jupyter notebook (no \"cells\" list); restore it with git checkout -- {path}")
    for index, cell in enumerate(notebook["cells"]):
        if not isinstance(cell, dict) or not isinstance(cell.get("source", ""), (str, list)):
            raise TruthCheckError(f"{path}: cell {index} is not a notebook cell (an object with a text source); "
                                  f"restore the file with git checkout -- {path}")
    return notebook


def check_notebook(path: Path, records: dict[str, Evidence], facts: list[Fact], phrases: list[Phrase],
                   notebook: dict | None = None) -> FileReport:
    """Check every markdown cell of one notebook against its own outputs, the records it cites and the facts."""
    notebook = read_notebook(path) if notebook is None else notebook
    outputs = notebook_evidence(notebook)
    file = relative(path)
    findings: list[Finding] = []
    for index, cell in enumerate(notebook["cells"]):
        if cell.get("cell_type") == "markdown":
            findings += check_markdown(_text(cell.get("source", "")), file, index, [outputs], records, facts, phrases)
    return FileReport(file, findings)


def _between(text: str, start_mark: str, end_mark: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(re.escape(start_mark) + ".*?" + re.escape(end_mark), text, re.S)]


def sections(text: str) -> list[tuple[int, int]]:
    """The spans from each markdown heading to the next (the first from the start), outside fenced code."""
    code = [(r.start, r.end) for r in regions(text) if r.rule == "code"]
    starts = [m.start() for m in re.finditer(r"^#{1,6}[ \t]", text, re.M) if not any(s <= m.start() < e for s, e in code)]
    bounds = [0, *[s for s in starts if s > 0], len(text)]
    return list(zip(bounds, bounds[1:]))


def check_readme(path: Path, records: dict[str, Evidence], facts: list[Fact], phrases: list[Phrase]) -> FileReport:
    """Check a markdown file (README.md) against the records each section cites, its Measured section and the facts."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TruthCheckError(f"{path}: cannot be read ({err}); check the path") from None
    generated = [*_between(text, MEASURED_START, MEASURED_END), *_between(text, LAUNCH_START, LAUNCH_END),
                 *_between(text, RECIPES_START, RECIPES_END)]
    measured = Evidence(where="records")  # written from the records by benchmarks/measured.py
    for start, end in _between(text, MEASURED_START, MEASURED_END):
        measured.add_text(text[start:end])
    file = relative(path)
    return FileReport(file, check_markdown(text, file, None, [measured.freeze()], records, facts, phrases, generated,
                                           sections(text)))


def default_paths() -> list[Path]:
    """The committed notebooks and README.md."""
    return [*sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")), ROOT / "README.md"]


def check(paths: Iterable[Path] | None = None, results_dir: Path = RESULTS_DIR,
          facts_file: Path = FACTS_FILE) -> list[FileReport]:
    """A report per file (notebooks by their .ipynb suffix, anything else as markdown); default: default_paths()."""
    records = record_evidence(results_dir)
    facts, phrases = load_facts(facts_file)
    reports = []
    for path in (default_paths() if paths is None else [Path(p) for p in paths]):
        if path.suffix == ".ipynb":
            reports.append(check_notebook(path, records, facts, phrases))
        else:
            reports.append(check_readme(path, records, facts, phrases))
    return reports


def failures(paths: Iterable[Path] | None = None, **kwargs: Path) -> list[Finding]:
    """The unbacked numbers and banned phrases of the files (default: the committed notebooks and README.md)."""
    return [f for report in check(paths, **kwargs) for f in report.findings if f.status in ("unbacked", "phrase")]


def unbacked(paths: Iterable[Path] | None = None, **kwargs: Path) -> list[Finding]:
    """The unbacked numbers only (failures() without the banned phrases)."""
    return [f for f in failures(paths, **kwargs) if f.status == "unbacked"]


def format_report(reports: list[FileReport], everything: bool = False) -> str:
    """The summary line of each file, then every unbacked number and banned phrase, grouped by file."""
    lines = ["Truth check (docs/numbers.md): numbers in the prose of each file and what backs them", ""]
    lines += [report.summary() for report in reports]
    total = Counter()
    for report in reports:
        total.update(report.counts())
    numbers = sum(n for status, n in total.items() if status != "phrase")
    exempt = sum(n for status, n in total.items() if status.startswith("exempt:"))
    lines += ["", f"all files: {numbers} numbers: outputs {total['outputs']}, records {total['records']}, facts "
                  f"{total['facts']}, arithmetic {total['arithmetic']}, exempt {exempt}, UNBACKED {total['unbacked']}; "
                  f"banned phrases {total['phrase']}"]
    for report in reports:
        shown = [f for f in report.findings if everything or f.status in ("unbacked", "phrase")]
        if not shown:
            continue
        lines += ["", f"== {report.file}"]
        for f in shown:
            label = {"unbacked": "unbacked", "phrase": "banned phrase"}.get(f.status, f.status)
            extra = f" [{f.detail.split('; ', 1)[1]}]" if f.status in ("phrase", "facts") and "; " in f.detail else ""
            text = f.text if len(f.text) <= 60 else f.text[:57] + "..."
            lines.append(f"{f.where()}: {label} {text!r}{extra}: {f.sentence}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The command line: print the report (or write it with --report); exit 0, 1 (unbacked) or 2 (unreadable input)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks and markdown files (default: notebooks/*.ipynb "
                                                            "and README.md)")
    parser.add_argument("--report", type=Path, help="also write the report to this file")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the records (default: results/)")
    parser.add_argument("--facts", type=Path, default=FACTS_FILE, help="the fact list (default: tools/facts.json)")
    parser.add_argument("--all", action="store_true", help="list every number with what backs it, not only failures")
    args = parser.parse_args(argv)
    try:
        reports = check(args.paths or None, results_dir=args.results, facts_file=args.facts)
    except TruthCheckError as err:
        print(f"truth check: {err}", file=sys.stderr)
        return 2
    text = format_report(reports, everything=args.all)
    if args.report:
        args.report.write_text(text, encoding="utf-8")
    print(text, end="")
    return 1 if any(f.status in ("unbacked", "phrase") for r in reports for f in r.findings) else 0


if __name__ == "__main__":
    sys.exit(main())
