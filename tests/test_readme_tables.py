"""The README's result tables agree with the committed result files (experiments/readme_tables.py)."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))  # readme_tables imports its siblings, as when run as a script
_spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "experiments" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_tables)


def test_readme_tables_match_the_result_files(capsys):
    assert readme_tables.main([]) == 0, capsys.readouterr().err
    assert len(readme_tables.tables((ROOT / "README.md").read_text().split("\n"))) >= 20


def test_a_stale_table_is_reported_and_rewritten(tmp_path, capsys):
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    original = readme.read_text()
    lines = original.split("\n")
    start, _, made = readme_tables.tables(lines)[-1]
    row = lines[start + 2]
    lines[start + 2] = row.replace(row.split(" | ")[2], "0.999 ± 0.000", 1)
    readme.write_text("\n".join(lines))
    assert readme_tables.main(["--readme", str(readme)]) == 1
    assert "differs from its result file" in capsys.readouterr().err
    assert readme_tables.main(["--readme", str(readme), "--write"]) == 0
    assert readme.read_text() == original
    assert readme_tables.main(["--readme", str(readme)]) == 0


@pytest.mark.parametrize("marker, message", [
    ("<!-- table: nonsense -->", "unknown table kind 'nonsense'"),
    ("<!-- table: curves file=missing.json strategy=uniform metric=normalized_utility -->", "missing.json does not exist"),
    ("<!-- table: curves file=routerbench.json strategy=uniform metric=no_such_metric -->", "cannot make curves"),
    ("<!-- table: curves file=routerbench.json strategy=uniform -->", "cannot make curves"),
    ("<!-- table: curves file = x -->", "malformed table marker"),
    ("<!-- table: lam_bands_compare base=lam_bands_routerbench variant=lam_bands_routerbench_ema labels=a,b -->",
     r"seeds \['0', '1', '2'\] and lam_bands_routerbench_ema seeds .*compare the same"),
    ("<!-- table: lam_bands_summary files=lam_bands_routerbench,lam_bands_routerbench_ema -->",
     "the files hold different seeds .*compare the same"),
])
def test_bad_markers_name_the_problem(marker, message):
    lines = ["text", "", marker, "| a |", "|---|", "| b |"]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        readme_tables.tables(lines)


def test_a_marker_without_a_table_is_an_error():
    with pytest.raises(ValueError, match="no Markdown table follows"):
        readme_tables.tables(["<!-- table: ablations -->", "", "prose"])


def test_result_files_record_their_provenance(tmp_path):
    """experiments/common.write_results opens each result file with where it came from."""
    import json

    import common

    common.write_results(tmp_path / "r.json", {"runs": {"0": {"x": 0.1}}})
    written = json.loads((tmp_path / "r.json").read_text())
    assert list(written) == ["provenance", "runs"] and written["runs"] == {"0": {"x": 0.1}}
    record = written["provenance"]
    assert {"commit", "uncommitted_changes", "command", "date", "jax", "devices", "cpu_count", "cpu"} <= set(record)
    assert set(record["cpu"]) == {"model", "machine", "flags"}
    if (ROOT / ".git").exists():
        assert len(record["commit"]) == 40 and isinstance(record["uncommitted_changes"], bool)
    assert record["command"].startswith("python ") and sys.argv[0].rsplit("/", 1)[-1] in record["command"]


def test_cpu_info_reads_the_model_and_the_kernel_flags(tmp_path):
    """The CPU a result came from: its model and the vector extensions that pick XLA's kernels."""
    from metarouter_jax.machine import cpu_info

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B45\nflags\t\t: fpu sse4_2 avx2 fma avx512f avx512_bf16\n"
                   "\nprocessor\t: 1\nmodel name\t: AMD EPYC 9B45\nflags\t\t: fpu\n")
    info = cpu_info(x86)
    assert info["model"] == "AMD EPYC 9B45" and info["flags"] == ["sse4_2", "avx2", "fma", "avx512f", "avx512_bf16"]
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd4f\n")
    assert cpu_info(arm)["flags"] == ["asimd", "sve"]
    assert cpu_info(tmp_path / "missing")["flags"] == []      # no /proc/cpuinfo: no flags, no error
