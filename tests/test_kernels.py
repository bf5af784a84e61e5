"""The kernels the project starts itself use IPC sockets, so ipykernel's "Kernel is running
over TCP without encryption" warning never appears: `dlcourse check`, and the book's build
(book/_ext/ipc_kernels.py wrapping jupyter-cache's executor)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
WARNING = "without encryption"
TRANSPORT = "from ipykernel.kernelapp import IPKernelApp\nprint('transport', IPKernelApp.instance().transport)"


def test_dlcourse_check_starts_its_kernel_over_ipc(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(TRANSPORT)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "tiny.ipynb")
    script = ("from dlcourse.grading.selfcheck import run_visible_tests\n"
              "import dlcourse.grading.selfcheck as s, nbclient\n"
              "original = nbclient.NotebookClient.execute\n"
              "def execute(self, *a, **k):\n"
              "    result = original(self, *a, **k)\n"
              "    print(self.nb.cells[0].outputs[0]['text'].strip())\n"
              "    return result\n"
              "nbclient.NotebookClient.execute = execute\n"
              f"run_visible_tests({str(tmp_path / 'tiny.ipynb')!r}, timeout=60)\n")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "transport ipc" in completed.stdout
    assert WARNING not in completed.stderr, completed.stderr


def test_the_books_kernels_run_over_ipc(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(TRANSPORT)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "tiny.ipynb")
    script = ("import sys, nbformat\n"
              f"sys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
              "import ipc_kernels\n"
              "class App:\n"
              "    def connect(self, *args): pass\n"
              "ipc_kernels.setup(App())\n"
              "from jupyter_cache.executors.utils import single_nb_execution\n"
              f"nb = nbformat.read({str(tmp_path / 'tiny.ipynb')!r}, as_version=4)\n"
              f"result = single_nb_execution(nb, cwd={str(tmp_path)!r}, timeout=60, allow_errors=False)\n"
              "assert result.err is None, result.exc_string\n"
              "print(nb.cells[0].outputs[0]['text'].strip())\n")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "transport ipc" in completed.stdout
    assert WARNING not in completed.stderr, completed.stderr
