"""The code fingerprint every run records (``runfiles.code_fingerprint``): the same code
gives the same fingerprint, an edit to a file the script imports (directly or through
another) changes it, and an edit to a file it never imports does not."""
from medimg.runfiles import PROJECT, code_fingerprint, imported_project_files


def project(tmp_path):
    files = {
        "train.py": "import os\nimport torch\nfrom lib import model\n\ndef main():\n    import lib.late\n",
        "lib/__init__.py": "",
        "lib/model.py": "from lib.layers import Conv\n",
        "lib/layers.py": "Conv = None\n",
        "lib/late.py": "# imported inside a function\n",
        "unrelated.py": "import lib.model\n",
        "tests/test_train.py": "import train\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path / "train.py"


def test_an_edit_to_an_imported_file_changes_it_and_an_unrelated_file_does_not(tmp_path):
    script = project(tmp_path)
    before = code_fingerprint(script, tmp_path)
    assert before["files"] == ["lib/__init__.py", "lib/late.py", "lib/layers.py", "lib/model.py", "train.py"]
    assert code_fingerprint(script, tmp_path) == before
    (tmp_path / "unrelated.py").write_text("# edited\n")
    (tmp_path / "tests/test_train.py").write_text("# edited\n")
    assert code_fingerprint(script, tmp_path) == before
    (tmp_path / "lib/layers.py").write_text("Conv = 1\n")  # imported through lib/model.py
    after = code_fingerprint(script, tmp_path)
    assert after["sha256"] != before["sha256"] and after["files"] == before["files"]
    (tmp_path / "lib/layers.py").write_text("Conv = None\n")  # undone: the same code again
    assert code_fingerprint(script, tmp_path) == before


def test_the_training_script_hashes_the_project_files_it_imports():
    files = imported_project_files(PROJECT / "main_segmentation.py")
    assert {"main_segmentation.py", "unet.py", "utils.py", "medimg/retina.py", "medimg/training.py"} <= set(files)
    assert not any(f.startswith(("report/", "tools/", "tests/", "experiments")) for f in files)
    assert all((PROJECT / f).is_file() for f in files)
