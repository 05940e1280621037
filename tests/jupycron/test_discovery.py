"""Discovery: which files are autorun notebooks, and how their ``# jupycron:`` line is read."""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path

import nbformat
import pytest

from jupycron import discovery
from jupycron.discovery import (
    DISABLED_IN_LINE,
    NO_LINE,
    ScanCache,
    parse_spec,
    read_notebook,
    scan,
)
from jupycron.exceptions import SpecError
from jupycron.models import JobSpec

LINE = '# jupycron: {"every": "30 minute", "MaxMem": 500}'


def write_nb(path: Path, *cells: nbformat.NotebookNode) -> Path:
    """Write a notebook the way Jupyter does (nbformat: sorted keys, one-space indent)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def code(source: str, outputs: list | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if outputs:
        cell.outputs = outputs
    return cell


def md(source: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(source)


def png_output(n_bytes: int, text: str = "<Figure>") -> nbformat.NotebookNode:
    data = base64.b64encode(os.urandom(n_bytes)).decode()
    return nbformat.v4.new_output("display_data", data={"image/png": data, "text/plain": text})


def spec_of(tmp_path: Path, *cells: nbformat.NotebookNode):
    p = write_nb(tmp_path / "x_autorun.ipynb", *cells)
    return read_notebook(p, "x_autorun.ipynb")


# --- parse_spec ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    # the old tool's documented example and its "N min(s)" forms
    ('{"every": "30 minute", "MaxMem": 500}', JobSpec(every="30 minute", max_mem_mb=500)),
    ('{"every": "5 min"}', JobSpec(every="5 minute")),
    ('{"every": "10 mins"}', JobSpec(every="10 minute")),
    ('{"every": "1 hours"}', JobSpec(every="1 hour")),
    ('{"every": "1.5 hour", "MaxRuntime": 600}', JobSpec(every="1.5 hour", max_runtime_s=600.0)),
    ('{"every": "2 day", "MaxMem": 250.5}', JobSpec(every="2 day", max_mem_mb=251)),
    ('{"every": "1 week", "enabled": true}', JobSpec(every="1 week")),
    ('{"every": "3 months"}', JobSpec(every="3 month")),
    ('{"cron": "30  2 * * *"}', JobSpec(cron="30 2 * * *")),
    ('{"cron": "0 9 * * 1-5", "tz": "Europe/Berlin"}', JobSpec(cron="0 9 * * 1-5", tz="Europe/Berlin")),
    ('{"every": "1 day", "enabled": false}', JobSpec(every="1 day", enabled=False)),
    ('{"every": "1 day", "AlertOnFinding": true}', JobSpec(every="1 day", alert_on_finding=True)),
    ('{"every": "1 day", "AlertOnFinding": false}', JobSpec(every="1 day", alert_on_finding=False)),
    ('{"every": "1 day", "AlertOnFinding": ["Slack", "ntfy", "slack"]}',
     JobSpec(every="1 day", alert_on_finding=("slack", "ntfy"))),
])
def test_parse_spec_valid(text: str, expected: JobSpec) -> None:
    got = parse_spec(" " + text + "  ")
    assert got == JobSpec(**{**expected.__dict__, "raw": text})


@pytest.mark.parametrize("text, reason", [
    ('{"every": "30 minute"', "not valid JSON"),
    ("", "nothing after"),
    ('["every", "1 day"]', "expected a JSON object"),
    ('{"every": "30 fortnight"}', "unknown unit 'fortnight'"),
    ('{"every": "0 minute"}', "must be positive"),
    ('{"every": "-1 hour"}', '"every" must look like'),
    ('{"every": "1.5 month"}', "months must be whole"),
    ('{"every": 30}', '"every" must be a string'),
    ('{"every": "1 day", "cron": "0 0 * * *"}', "not both"),
    ('{"MaxMem": 500}', 'missing "every"'),
    ('{"cron": "0 0 * *"}', "must have 5 fields"),
    ('{"cron": "0 0 * * * *"}', "must have 5 fields"),
    ('{"cron": "61 0 * * *"}', "invalid expression"),
    ('{"cron": "0 0 30 2 *"}', "never fires"),
    ('{"cron": "0 0 * * *", "tz": "Mars/Olympus"}', "unknown time zone 'Mars/Olympus'"),
    ('{"cron": "0 0 * * *", "tz": 1}', '"tz" must be an IANA'),
    ('{"every": "1 day", "tz": "UTC"}', '"tz" only applies to "cron"'),
    ('{"every": "1 day", "maxmem": 5}', "unknown key 'maxmem' (did you mean 'MaxMem'?)"),
    ('{"every": "1 day", "color": "red"}', "unknown key 'color' (known:"),
    ('{"every": "1 day", "MaxMem": "500"}', '"MaxMem" must be a number'),
    ('{"every": "1 day", "MaxMem": true}', '"MaxMem" must be a number'),
    ('{"every": "1 day", "MaxMem": 0}', '"MaxMem" must be positive'),
    ('{"every": "1 day", "MaxRuntime": -3}', '"MaxRuntime" must be positive'),
    ('{"every": "1 day", "enabled": "no"}', '"enabled" must be true or false'),
    ('{"every": "1 day", "every": "2 day"}', "duplicate key 'every'"),
    ('{"every": "1 day", "AlertOnFinding": "yes"}', '"AlertOnFinding" must be true, false or a list'),
    ('{"every": "1 day", "AlertOnFinding": []}', '"AlertOnFinding" must be true, false or a list'),
    ('{"every": "1 day", "AlertOnFinding": ["slack", 3]}', '"AlertOnFinding" must be true, false'),
    ('{"every": "1 day", "AlertOnFinding": ["pager"]}',
     '"AlertOnFinding": unknown channel(s) "pager" (use alertmanager, slack, ntfy)'),
    ('{"every": "1 day", "alertonfinding": true}', "did you mean 'AlertOnFinding'?"),
])
def test_parse_spec_invalid(text: str, reason: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(text)
    assert reason in str(exc.value)


# --- reading notebooks -----------------------------------------------------------------------

def test_line_in_code_cell(tmp_path: Path) -> None:
    nb = spec_of(tmp_path, md("# Title"), code(f"import os\n{LINE}\nprint(1)"))
    assert nb.spec == JobSpec(every="30 minute", max_mem_mb=500,
                              raw='{"every": "30 minute", "MaxMem": 500}')
    assert nb.disabled_reason is None and nb.schedulable
    assert nb.path == "x_autorun.ipynb" and nb.size > 0 and nb.mtime > 0


def test_line_spacing_variants(tmp_path: Path) -> None:
    nb = spec_of(tmp_path, code('   #jupycron  :{"every":"1 day"}'))
    assert nb.spec is not None and nb.spec.every == "1 day"


def test_marker_is_lower_case(tmp_path: Path) -> None:
    assert spec_of(tmp_path, code('# JupyCron: {"every": "1 day"}')).disabled_reason == NO_LINE


def stream(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name="stdout", text=text)


BIG_LAYOUTS = {
    # the first code cell holds the line behind its own large outputs
    "line-behind-own-outputs": ([code(f"{LINE}\nplot()", [png_output(400_000)])], "30 minute"),
    # a large cell prints the marker text; the line comes in a later cell
    "marker-in-big-output": ([code("plot()", [png_output(300_000), stream(LINE)]),
                              code('# jupycron: {"every": "2 day"}')], "2 day"),
    # the marker only appears in the metadata after the cells
    "marker-in-metadata": ([code("plot()", [png_output(300_000)])], None),
    "no-marker-at-all": ([code("plot()", [png_output(300_000)]), md("hi")], None),
}


@pytest.mark.parametrize("name", list(BIG_LAYOUTS))
@pytest.mark.parametrize("compact", [False, True], ids=["jupyter", "compact"])
def test_big_notebook_layouts(tmp_path: Path, name: str, compact: bool) -> None:
    cells, every = BIG_LAYOUTS[name]
    p = write_nb(tmp_path / "l_autorun.ipynb", *cells)
    doc = json.loads(p.read_text())
    if name == "marker-in-metadata":
        doc["metadata"]["note"] = LINE
    p.write_text(json.dumps(doc, separators=(",", ":")) if compact
                 else json.dumps(doc, indent=1, sort_keys=True))
    nb = read_notebook(p, "l_autorun.ipynb")
    assert (nb.spec.every if nb.spec else None) == every
    assert nb.disabled_reason == (None if every else NO_LINE)


def test_no_line(tmp_path: Path) -> None:
    nb = spec_of(tmp_path, code("print(1)"), md("text"))
    assert nb.spec is None and nb.disabled_reason == NO_LINE


def test_empty_notebook(tmp_path: Path) -> None:
    nb = spec_of(tmp_path)
    assert nb.disabled_reason == NO_LINE


def test_disabled_line(tmp_path: Path) -> None:
    nb = spec_of(tmp_path, code('# jupycron: {"every": "1 day", "enabled": false}'))
    assert nb.spec is not None and not nb.spec.enabled
    assert nb.disabled_reason == DISABLED_IN_LINE and not nb.schedulable


def test_invalid_line_reason(tmp_path: Path) -> None:
    nb = spec_of(tmp_path, code('# jupycron: {"every": "30 parsecs"}'))
    assert nb.spec is None
    assert nb.disabled_reason == ("invalid jupycron line: \"every\": unknown unit 'parsecs' "
                                  "(use minute(s)/min(s), hour(s), day(s), week(s) or month(s))")


@pytest.mark.parametrize("cells", [
    pytest.param([md(LINE)], id="markdown"),
    pytest.param([nbformat.v4.new_raw_cell(LINE)], id="raw"),
    pytest.param([code("print(1)", [nbformat.v4.new_output("stream", name="stdout", text=LINE + "\n")])],
                 id="stream-output"),
    pytest.param([code("x", [nbformat.v4.new_output("execute_result", data={"text/plain": LINE},
                                                    execution_count=1)])], id="result-output"),
    pytest.param([code(f"x = 1  {LINE}")], id="trailing-comment"),
    pytest.param([code(f"s = '''\n{LINE[2:]}\n'''")], id="not-a-comment"),
])
def test_line_outside_code_source_is_ignored(tmp_path: Path, cells: list) -> None:
    assert spec_of(tmp_path, *cells).disabled_reason == NO_LINE


def test_markdown_line_before_code_line_does_not_win(tmp_path: Path) -> None:
    nb = spec_of(tmp_path, md('# jupycron: {"every": "1 day"}'),
                 code("import x", [nbformat.v4.new_output("stream", name="stdout",
                                                          text='# jupycron: {"every": "2 day"}')]),
                 code('# jupycron: {"every": "3 day"}'), code('# jupycron: {"every": "4 day"}'))
    assert nb.spec is not None and nb.spec.every == "3 day"


def test_five_megabyte_notebook_line_after_image_outputs(tmp_path: Path) -> None:
    """Jupyter sorts keys, so a cell's outputs come before its source: the line sits behind
    ~2.5 MB of base64 in the same cell and behind another image cell."""
    big = [png_output(930_000), png_output(930_000)]
    p = write_nb(tmp_path / "big_autorun.ipynb",
                 code("plot()", big),
                 md(LINE),
                 code(f"{LINE.replace('30 minute', '2 hour')}\nplot()", big))
    assert p.stat().st_size > 4_900_000
    nb = read_notebook(p, "big_autorun.ipynb")
    assert nb.spec is not None and nb.spec.every == "2 hour" and nb.spec.max_mem_mb == 500


def test_five_megabyte_notebook_without_line(tmp_path: Path) -> None:
    p = write_nb(tmp_path / "big_autorun.ipynb",
                 code("plot()", [png_output(1_900_000), png_output(1_900_000)]), md(LINE))
    assert p.stat().st_size > 4_900_000
    assert read_notebook(p, "big_autorun.ipynb").disabled_reason == NO_LINE


def test_fast_path_stops_at_the_line(tmp_path: Path) -> None:
    """A big notebook with the line in its first cell is not read to the end: here the tail
    is cut off (a truncated file), yet the line is found. Such a notebook fails when run."""
    p = write_nb(tmp_path / "t_autorun.ipynb", code(LINE), code("plot()", [png_output(3_000_000)]))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    nb = read_notebook(p, "t_autorun.ipynb")
    assert nb.spec is not None and nb.spec.every == "30 minute"


def test_non_jupyter_key_order_falls_back_to_full_parse(tmp_path: Path) -> None:
    doc = {"metadata": {}, "nbformat": 4, "nbformat_minor": 5,
           "cells": [{"source": [LINE], "outputs": [], "cell_type": "code", "metadata": {}}]}
    p = tmp_path / "o_autorun.ipynb"
    p.write_text(json.dumps(doc))
    assert read_notebook(p, "o_autorun.ipynb").spec.every == "30 minute"  # type: ignore[union-attr]


def test_compact_json_and_string_source(tmp_path: Path) -> None:
    doc = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [],
                      "source": "a = 1\n" + LINE + "\n"}], "metadata": {}, "nbformat": 4}
    p = tmp_path / "c_autorun.ipynb"
    p.write_text(json.dumps(doc, separators=(",", ":")))
    assert read_notebook(p, "c_autorun.ipynb").spec.every == "30 minute"  # type: ignore[union-attr]


def test_nbformat3_worksheets(tmp_path: Path) -> None:
    doc = {"metadata": {}, "nbformat": 3, "worksheets": [
        {"cells": [{"cell_type": "markdown", "source": ["hi"]},
                   {"cell_type": "code", "input": [LINE], "outputs": []}]}]}
    p = tmp_path / "v3_autorun.ipynb"
    p.write_text(json.dumps(doc))
    assert read_notebook(p, "v3_autorun.ipynb").spec.every == "30 minute"  # type: ignore[union-attr]


@pytest.mark.parametrize("content, fragment", [
    (b"", "invalid JSON"),
    (b'{"cells": [{"cell_type": "code", "source": ["x"]}', "truncated notebook"),
    (b"not json at all", "invalid JSON"),
    (b'{"cells": [{"cell_type": "code", "source": ["x"]}, 42]}', "cell 1 is not a JSON object"),
    (b'{"cells": [{"cell_type": "code", "source": ["x"]} {"a": 1}]}', "invalid JSON after cell 0"),
    (b'{"cells": [{"cell_type": "code", "source": ["\xff\xfe"]}]}', "not UTF-8"),
    (b'{"cells": [{"cell_type": "code", "sou', "invalid JSON in cell 0"),
    (b'{"metadata": {}}', 'no "cells"'),
    (b"[1, 2]", "not a JSON object"),
])
def test_corrupt_notebooks_are_disabled_not_raised(tmp_path: Path, content: bytes, fragment: str) -> None:
    p = tmp_path / "bad_autorun.ipynb"
    p.write_bytes(content)
    nb = read_notebook(p, "bad_autorun.ipynb")
    assert nb.spec is None
    assert nb.disabled_reason is not None
    assert nb.disabled_reason.startswith("cannot read notebook: ")
    assert fragment in nb.disabled_reason


def test_broken_symlink_is_disabled(tmp_path: Path) -> None:
    (tmp_path / "gone_autorun.ipynb").symlink_to(tmp_path / "nowhere.ipynb")
    (nb,) = scan(tmp_path, tmp_path / "jupycron")
    assert nb.path == "gone_autorun.ipynb"
    assert nb.disabled_reason == "cannot read notebook: No such file or directory"


# --- scanning --------------------------------------------------------------------------------

ODD_NAMES = [
    "with space_autorun.ipynb",
    "quote'd \"double\"_autorun.ipynb",
    "semi;colon_autorun.ipynb",
    "$(touch pwned)_autorun.ipynb",
    "ünïcødé-日本_autorun.ipynb",
    "autorun.ipynb",
]


def test_scan_rules(tmp_path: Path) -> None:
    root = tmp_path / "notebooks"
    good = ["a_autorun.ipynb", "sub/b_autorun.ipynb", "sub/deeper/more/c_autorun_v2.ipynb",
            *(f"odd/{n}" for n in ODD_NAMES)]
    for rel in good:
        write_nb(root / rel, code(LINE))
    skipped = [
        ".hidden/a_autorun.ipynb", "sub/.ipynb_checkpoints/b_autorun-checkpoint.ipynb",
        ".hidden_autorun.ipynb", "jupycron/x_autorun.ipynb", "jupycron/deep/y_autorun.ipynb",
        "plain.ipynb", "AUTORUN_upper.ipynb", "a_autorun.ipynb.bak", "a_autorun.py",
    ]
    for rel in skipped:
        write_nb(root / rel, code(LINE))
    (root / "dir_autorun.ipynb").mkdir()
    # symlink loops and a symlinked directory: not followed
    (root / "sub" / "loop").symlink_to(root)
    (root / "sub" / "deeper" / "up").symlink_to(root / "sub")
    outside = tmp_path / "outside"
    write_nb(outside / "z_autorun.ipynb", code(LINE))
    (root / "linked").symlink_to(outside)
    # a symlinked notebook file is read
    (root / "sub" / "alias_autorun.ipynb").symlink_to(root / "a_autorun.ipynb")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*.ipynb") if p.is_file()}

    found = scan(root, root / "jupycron")

    expected = sorted([*good, "sub/alias_autorun.ipynb"])
    assert [n.path for n in found] == expected
    assert all(n.schedulable and n.spec.every == "30 minute" for n in found)  # type: ignore[union-attr]
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before}
    assert after == before, "scan must never modify notebooks"


def test_output_folder_outside_notebooks(tmp_path: Path) -> None:
    root, out = tmp_path / "nb", tmp_path / "out"
    write_nb(root / "jupycron" / "a_autorun.ipynb", code(LINE))
    out.mkdir()
    # the default output name is skipped only when it is the output folder
    assert [n.path for n in scan(root, out)] == ["jupycron/a_autorun.ipynb"]
    assert scan(root, root / "jupycron") == []


def test_missing_notebooks_folder(tmp_path: Path) -> None:
    assert scan(tmp_path / "nope", tmp_path / "out") == []


@pytest.fixture
def trust_new_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the cache trust files written a moment ago (normally re-read for 2 s)."""
    monkeypatch.setattr(discovery, "_RACY_NS", -3600 * 10**9)


def test_scan_cache(tmp_path: Path, trust_new_files: None) -> None:
    root = tmp_path / "nb"
    a = write_nb(root / "a_autorun.ipynb", code(LINE))
    b = write_nb(root / "b_autorun.ipynb", code(LINE))
    cache = ScanCache()
    first = scan(root, None, cache)
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 2)
    assert scan(root, None, cache) == first
    assert (cache.hits, cache.misses) == (2, 2)
    # a change (size and mtime) is re-read; a removed file leaves the cache
    write_nb(a, code('# jupycron: {"every": "2 hour"}'))
    os.utime(a, ns=(1, 1_000_000_000))
    b.unlink()
    third = scan(root, None, cache)
    assert [(n.path, n.spec.every) for n in third] == [("a_autorun.ipynb", "2 hour")]  # type: ignore[union-attr]
    assert (cache.hits, cache.misses, len(cache)) == (2, 3, 1)


# --- the byte-level reader: tricky layouts ---------------------------------------------------

def reference_line(path: Path) -> str | None:
    """The rule itself, on a fully decoded notebook (what the fast reader must agree with)."""
    return discovery.find_spec_text(json.loads(path.read_text(encoding="utf-8")))


def read_line(path: Path) -> str | None:
    """The raw text after ``jupycron:`` as the fast reader finds it."""
    with open(path, "rb") as f:
        return discovery._find_in_fd(f.fileno(), os.fstat(f.fileno()))


def write_variant(path: Path, doc: dict, variant: str) -> None:
    """Write ``doc`` as Jupyter does, compact, or Jupyter's layout with CRLF newlines."""
    if variant == "compact":
        text = json.dumps(doc, separators=(",", ":"))
    else:
        text = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        if variant == "crlf":
            text = text.replace("\n", "\r\n")  # JSON strings hold no raw newline
    path.write_bytes(text.encode("utf-8"))


VARIANTS = ["jupyter", "compact", "crlf"]


def nb_doc(*cells: nbformat.NotebookNode) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return json.loads(nbformat.writes(nb))


@pytest.mark.parametrize("variant", VARIANTS)
def test_line_after_four_megabyte_image_cell(tmp_path: Path, variant: str) -> None:
    p = tmp_path / "i_autorun.ipynb"
    write_variant(p, nb_doc(md("# Report"), code("plot()", [png_output(3_000_000)]),
                            code('x = 1\n# jupycron: {"every": "3 hour"}')), variant)
    assert p.stat().st_size > 4_000_000
    assert read_notebook(p, "i_autorun.ipynb").spec.every == "3 hour"  # type: ignore[union-attr]


@pytest.mark.parametrize("variant", VARIANTS)
def test_marker_printed_by_the_cell_that_holds_the_line(tmp_path: Path, variant: str) -> None:
    """Sorted keys put a cell's outputs before its source: the output's copy comes first."""
    p = tmp_path / "o_autorun.ipynb"
    write_variant(p, nb_doc(code('# jupycron: {"every": "5 day"}\nprint(open(__file__).read())',
                                 [png_output(100_000), stream('# jupycron: {"every": "1 day"}\n')])),
                  variant)
    assert read_notebook(p, "o_autorun.ipynb").spec.every == "5 day"  # type: ignore[union-attr]


def test_quotes_and_backslashes_in_the_line(tmp_path: Path) -> None:
    line = r'# jupycron: {"cron": "0 6 * * 1-5", "tz": "Europe/Rome", "MaxRuntime": 60}'
    p = write_nb(tmp_path / "q_autorun.ipynb", code(f's = "a \\"b\\" \\\\ c"\n{line}'))
    assert b'\\"cron\\": \\"0 6 * * 1-5\\"' in p.read_bytes()  # JSON escapes the quotes
    nb = read_notebook(p, "q_autorun.ipynb")
    assert nb.spec == JobSpec(cron="0 6 * * 1-5", tz="Europe/Rome", max_runtime_s=60.0,
                              raw=line.split(":", 1)[1].strip())


@pytest.mark.parametrize("blank", ["\t", "\u00a0", "\u2003", "\x1f", " \t "])
@pytest.mark.parametrize("variant", VARIANTS)
def test_blanks_json_escapes_or_writes_raw(tmp_path: Path, blank: str, variant: str) -> None:
    """``\\s`` around ``#`` matches tabs (``\\t`` in JSON), control blanks (``\\u001f``) and
    non-ASCII spaces (raw UTF-8, or ``\\u00a0`` with ensure_ascii) alike."""
    p = tmp_path / "b_autorun.ipynb"
    write_variant(p, nb_doc(code(f'{blank}#{blank}jupycron{blank}:{{"every": "2 week"}}')), variant)
    assert read_notebook(p, "b_autorun.ipynb").spec.every == "2 week"  # type: ignore[union-attr]


def test_escaped_marker_letters_are_not_recognised(tmp_path: Path) -> None:
    """Documented limit: no JSON writer escapes ``#`` or ASCII letters, so the marker is
    searched as plain bytes; a hand-escaped ``\\u006aupycron`` is not found."""
    p = write_nb(tmp_path / "e_autorun.ipynb", code(LINE))
    p.write_bytes(p.read_bytes().replace(b"# jupycron", b"# \\u006aupycron"))
    assert reference_line(p) is not None  # the decoded text does hold the line...
    assert read_notebook(p, "e_autorun.ipynb").disabled_reason == NO_LINE  # ...by design


@pytest.mark.parametrize("where", ["cell-metadata", "attachment-name", "notebook-metadata"])
def test_marker_in_metadata_or_attachments_is_ignored(tmp_path: Path, where: str) -> None:
    cell = code("x = 1", [png_output(50_000)])
    doc_cells = [md("![a](attachment:a.png)"), cell, code('# jupycron: {"every": "4 hour"}')]
    doc = nb_doc(*doc_cells)
    if where == "cell-metadata":
        doc["cells"][1]["metadata"]["note"] = LINE
    elif where == "attachment-name":
        doc["cells"][0]["attachments"] = {LINE: {"text/plain": LINE}}
    else:
        doc["metadata"]["note"] = LINE
        del doc["cells"][2]
    p = tmp_path / "m_autorun.ipynb"
    write_variant(p, doc, "jupyter")
    nb = read_notebook(p, "m_autorun.ipynb")
    assert (nb.spec.every if nb.spec else None) == (None if where == "notebook-metadata" else "4 hour")


def test_many_hash_signs_before_the_line(tmp_path: Path) -> None:
    """A progress bar of thousands of ``#`` switches the search to the marker itself."""
    bar = stream(("#" * 80 + "\n") * 200 + "# jupycron is mentioned here\n")
    p = write_nb(tmp_path / "h_autorun.ipynb", code("# comment\nrun()", [bar]),
                 code(f"# {'#' * 3000}\n{LINE}"))
    assert read_notebook(p, "h_autorun.ipynb").spec.every == "30 minute"  # type: ignore[union-attr]


def test_comment_that_is_not_the_line_then_the_line(tmp_path: Path) -> None:
    p = write_nb(tmp_path / "c_autorun.ipynb",
                 code('x = 1  # jupycron: {"every": "1 day"}\n# about jupycron'),
                 code('#jupycron:{"every":"6 hour"}'))
    assert read_notebook(p, "c_autorun.ipynb").spec.every == "6 hour"  # type: ignore[union-attr]


def test_line_in_a_cell_bigger_than_the_first_read(tmp_path: Path) -> None:
    src = "\n".join(f"# padding comment {i}" for i in range(3000)) + f"\n{LINE}"
    p = write_nb(tmp_path / "l_autorun.ipynb", code(src))
    assert p.stat().st_size > 3 * discovery._HEAD_BYTES
    assert read_notebook(p, "l_autorun.ipynb").spec.every == "30 minute"  # type: ignore[union-attr]


@pytest.mark.parametrize("damage, fragment", [
    ("truncate", "truncated notebook"),
    ("not-utf8", "not UTF-8"),
    ("broken-source", "invalid JSON"),
])
def test_damaged_jupyter_layout(tmp_path: Path, damage: str, fragment: str) -> None:
    p = write_nb(tmp_path / "d_autorun.ipynb", code("plot()", [png_output(60_000)]),
                 code("print(1)\n# a note" if damage == "truncate" else LINE))
    data = p.read_bytes()
    if damage == "truncate":
        data = data[: len(data) - 40]
    elif damage == "not-utf8":
        data = data.replace(b"30 minute", b"30 \xff\xfeute")
    else:
        data = data.replace(b'MaxMem\\": 500}"', b'MaxMem\\": 500}"]]]')
    p.write_bytes(data)
    nb = read_notebook(p, "d_autorun.ipynb")
    assert nb.spec is None and nb.disabled_reason is not None
    assert nb.disabled_reason.startswith("cannot read notebook: ") and fragment in nb.disabled_reason


def random_notebook(rng: random.Random) -> dict:
    """A notebook with markers scattered where they count and where they must not."""
    def text() -> str:
        pieces = ["import os", "x = 1", "# a comment", "print('#')", "##", "",
                  f'# jupycron: {{"every": "{rng.randint(1, 59)} minute"}}',
                  f'  #jupycron :{{"every": "{rng.randint(1, 23)} hour"}}',
                  'y = 2  # jupycron: {"every": "1 day"}', "# jupycron: not json",
                  '# JUPYCRON: {"every": "1 day"}', "s = '\\\"q\\\" \\\\'", "é # jupycron",
                  '\t# jupycron:\t{"every": "3 day"}']
        return "\n".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))

    cells = []
    for _ in range(rng.randint(0, 6)):
        kind = rng.choice(["code", "code", "markdown", "raw"])
        if kind == "code":
            outputs = [stream(text()) for _ in range(rng.randint(0, 2))]
            if rng.random() < 0.2:
                outputs.append(png_output(rng.randint(10, 30_000), text()))
            cell = code(text(), outputs)
            if rng.random() < 0.2:
                cell.metadata["tags"] = [text()]
            cells.append(cell)
        elif kind == "markdown":
            cells.append(md(text()))
        else:
            cells.append(nbformat.v4.new_raw_cell(text()))
    doc = nb_doc(*cells)
    if rng.random() < 0.2:
        doc["metadata"]["jupycron_note"] = text()
    return doc


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_reader_agrees_with_the_rule_on_random_notebooks(tmp_path: Path, variant: str) -> None:
    rng = random.Random(f"jupycron-{variant}")
    p = tmp_path / "r_autorun.ipynb"
    found = 0
    for i in range(150):
        write_variant(p, random_notebook(rng), variant)
        expected = reference_line(p)
        assert read_line(p) == expected, f"notebook {i}: {p.read_text()[:2000]}"
        found += expected is not None
    assert 30 < found < 140  # both outcomes are exercised


# --- persisted cache -------------------------------------------------------------------------

def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = discovery._read

    def spy(path: str, rel: str):  # type: ignore[no-untyped-def]
        reads.append(rel)
        return real(path, rel)

    monkeypatch.setattr(discovery, "_read", spy)
    return reads


def make_tree(root: Path) -> None:
    write_nb(root / "a_autorun.ipynb", code(LINE))
    write_nb(root / "sub" / "b_autorun.ipynb", code('# jupycron: {"every": "1 day", "enabled": false}'))
    write_nb(root / "c_autorun.ipynb", code('# jupycron: {"every": "30 parsecs"}'))
    write_nb(root / "d_autorun.ipynb", code("print(1)"))
    (root / "e_autorun.ipynb").write_bytes(b"not json")


def test_persisted_cache_serves_a_new_process(tmp_path: Path, trust_new_files: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root, out = tmp_path / "nb", tmp_path / "out"
    make_tree(root)
    out.mkdir()
    first = scan(root, out, ScanCache.for_output(out))
    cache_file = out / discovery.SCAN_CACHE_FILE
    assert cache_file.is_file()
    reads = count_reads(monkeypatch)
    again = ScanCache.for_output(out)  # what the next `jupycron tick` does
    stamp = cache_file.stat().st_mtime_ns
    assert scan(root, out, again) == first
    assert reads == [] and (again.hits, again.misses) == (5, 0)
    assert cache_file.stat().st_mtime_ns == stamp, "nothing changed: the file is not rewritten"
    assert [n.disabled_reason for n in first] == [
        None, "invalid jupycron line: \"every\": unknown unit 'parsecs' "
              "(use minute(s)/min(s), hour(s), day(s), week(s) or month(s))",
        NO_LINE, first[3].disabled_reason, DISABLED_IN_LINE]
    assert first[3].disabled_reason.startswith("cannot read notebook: invalid JSON")  # type: ignore[union-attr]


def test_persisted_cache_notices_changes(tmp_path: Path, trust_new_files: None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root, out = tmp_path / "nb", tmp_path / "out"
    make_tree(root)
    out.mkdir()
    scan(root, out, ScanCache.for_output(out))
    a = root / "a_autorun.ipynb"
    st = a.stat()
    # same size and mtime, new content written in place: only the ctime tells
    a.write_bytes(a.read_bytes().replace(b"30 minute", b"20 minute"))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (a.stat().st_size, a.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    (root / "d_autorun.ipynb").unlink()
    write_nb(root / "new_autorun.ipynb", code(LINE))
    reads = count_reads(monkeypatch)
    found = scan(root, out, ScanCache.for_output(out))
    assert sorted(reads) == ["a_autorun.ipynb", "new_autorun.ipynb"]
    assert found[0].spec.every == "20 minute"  # type: ignore[union-attr]
    assert "d_autorun.ipynb" not in [n.path for n in found]
    rows = json.loads((out / discovery.SCAN_CACHE_FILE).read_text())["entries"]
    assert sorted(r[1] for r in rows) == ["a_autorun.ipynb", "c_autorun.ipynb", "e_autorun.ipynb",
                                          "new_autorun.ipynb", "sub/b_autorun.ipynb"]


@pytest.mark.parametrize("content", [
    b"", b"{not json", b"[]", b'{"version": 99, "entries": []}',
    b'{"version": 1, "entries": [["p", "r", 1, 2, 3]]}',
    b'{"version": 1, "entries": [["p", "r", "1", 2, 3, 4, null, null]]}',
    b'{"version": 1, "entries": {}}',
])
def test_corrupt_cache_file_is_ignored_and_rebuilt(tmp_path: Path, trust_new_files: None,
                                                   content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    root, out = tmp_path / "nb", tmp_path / "out"
    make_tree(root)
    out.mkdir()
    (out / discovery.SCAN_CACHE_FILE).write_bytes(content)
    expected = scan(root, out)
    cache = ScanCache.for_output(out)
    assert scan(root, out, cache) == expected
    assert cache.misses == 5 and "ignoring the scan cache" in caplog.text
    doc = json.loads((out / discovery.SCAN_CACHE_FILE).read_text())
    assert doc["version"] == 1 and len(doc["entries"]) == 5


def test_recently_changed_files_are_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file changed less than 2 s before it was read is read again next time, and is not
    persisted: a second change in the same timestamp tick could keep the same stamps."""
    root, out = tmp_path / "nb", tmp_path / "out"
    write_nb(root / "a_autorun.ipynb", code(LINE))
    out.mkdir()
    cache = ScanCache.for_output(out)
    scan(root, out, cache)
    scan(root, out, cache)
    assert (cache.hits, cache.misses) == (0, 2)
    assert json.loads((out / discovery.SCAN_CACHE_FILE).read_text())["entries"] == []
    monkeypatch.setattr(discovery, "_RACY_NS", -3600 * 10**9)  # as if 2 s had passed
    scan(root, out, cache)
    scan(root, out, cache)
    assert (cache.hits, cache.misses) == (1, 3)


def test_os_errors_are_retried_and_cache_without_output_folder(tmp_path: Path, trust_new_files: None) -> None:
    root = tmp_path / "nb"
    write_nb(root / "a_autorun.ipynb", code(LINE))
    (root / "gone_autorun.ipynb").symlink_to(tmp_path / "nowhere.ipynb")
    cache = ScanCache.for_output(tmp_path / "missing-output")
    for _ in range(2):
        found = scan(root, None, cache)
    assert [n.disabled_reason for n in found] == [None, "cannot read notebook: No such file or directory"]
    assert len(cache) == 1 and not (tmp_path / "missing-output").exists()
