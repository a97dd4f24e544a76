"""Every notebook in notebooks/ runs top to bottom on small synthetic data, renders its
plots, and is stored with its outputs stripped."""

import json
import pathlib
import re
import subprocess

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: A code cell that draws (matplotlib or one of our plot_* helpers).
PLOT_CELL = re.compile(r"\bplot_\w+\(|\bplt\.|\.plot\(|\bimshow\(|\bFigure\(|\.savefig\(")
SMALL_ENV = {"ATTNLAB_NB_DATA": "synthetic", "ATTNLAB_NB_SMALL": "1"}


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _tracked_notebooks() -> list[pathlib.Path]:
    """Notebooks git tracks plus any not yet added (so a new notebook is checked too)."""
    try:
        out = subprocess.run(["git", "ls-files", "--", "notebooks/*.ipynb"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        out = []
    return sorted({ROOT / p for p in out if (ROOT / p).exists()} | set(NOTEBOOKS))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_renders_its_plots(path, monkeypatch, tmp_path):
    for k, v in SMALL_ENV.items():
        monkeypatch.setenv(k, v)  # the kernel inherits this process's environment
    default_root = tmp_path / "default-outputs"   # where outputs/ would be: nothing may land there
    monkeypatch.setenv("ATTNLAB_OUTPUTS", str(default_root))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError (with the traceback) if any cell fails
    outputs = [o for c in _code_cells(nb) for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if any(PLOT_CELL.search(c.source) for c in _code_cells(nb)):
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert images, f"{path.name} has a plot cell but produced no image output"
    # a notebook indexes its runs under its own temporary root, never the default outputs/
    written = [p for p in default_root.rglob("*") if p.is_file()] if default_root.exists() else []
    assert not written, f"{path.name} wrote into the default outputs root: {written[:3]}"


@pytest.mark.parametrize("path", _tracked_notebooks(), ids=lambda p: p.name)
def test_notebook_is_stored_with_outputs_stripped(path):
    raw = json.loads(path.read_text())
    nb = nbformat.reads(json.dumps(raw), as_version=4)
    nbformat.validate(nb)
    assert raw.get("nbformat") == 4
    for i, cell in enumerate(_code_cells(nb)):
        assert cell.get("outputs") == [], (f"{path.name} cell {i} has outputs; strip them with "
                                           "`jupyter nbconvert --clear-output --inplace notebooks/*.ipynb`")
        assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"


def test_notebooks_document_the_real_data_switch():
    for path in NOTEBOOKS:
        if path.stem in ("quickstart", "explain", "journey", "segments", "fairness_cold_start"):
            first = nbformat.read(path, as_version=4).cells[0]
            assert first.cell_type == "markdown" and "ATTNLAB_NB_DATA=complete_journey" in first.source
