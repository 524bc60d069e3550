"""What a page shows of a path: nothing that names this machine, and still a path that
resolves to the same place."""

import json
import tempfile
from pathlib import Path

from synthaug.machinery.executed import shorten_paths
from synthaug.paths import project_root, resolve_path, shown


def test_shown_paths_name_no_machine_and_resolve_back() -> None:
    tmp, home = Path(tempfile.gettempdir()), Path.home()
    for path, expected in [
        (tmp / "run" / "config.yaml", "$TMPDIR/run/config.yaml"),
        (home / "data" / "aid", "~/data/aid"),
        (project_root() / "models" / "tiny-flux1-aid", "models/tiny-flux1-aid"),
    ]:
        assert shown(path) == expected
        assert resolve_path(shown(path)) == path
    run = tmp / "runs" / "smoke"
    assert shown(run / "lora" / "summary.json", run) == "lora/summary.json"
    assert shown(f"read {run}/data and {home}/x", run) == "read data and ~/x"
    assert shown(0.5) == 0.5


def test_a_kept_notebook_shows_no_machine_folder(tmp_path) -> None:
    """Source, papermill's record, streams, errors and text displays are shortened; an
    image's base64 text is left alone."""
    folder = str(tmp_path)
    image = "iVBOR/tmp/xyz"  # base64 may hold any characters: not a path
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "source": [f'output_dir = "{folder}"\n'],
                "outputs": [
                    {"output_type": "stream", "text": [f"wrote {folder}/lora\n"]},
                    {"output_type": "error", "evalue": f"{folder}/x", "traceback": [folder]},
                    {
                        "output_type": "display_data",
                        "data": {"text/markdown": [f"{Path.home()}/a"], "image/png": image},
                    },
                ],
            }
        ],
        "metadata": {"papermill": {"output_path": f"{folder}/01_lora.ipynb"}},
    }
    path = tmp_path / "01_lora.ipynb"
    path.write_text(json.dumps(notebook))
    shorten_paths(path)
    kept = json.loads(path.read_text())
    text = json.dumps({**kept, "cells": [{**c, "outputs": []} for c in kept["cells"]]})
    outputs = kept["cells"][0]["outputs"]
    assert folder not in json.dumps(outputs[:2]) + text + json.dumps(
        outputs[2]["data"]["text/markdown"]
    )
    assert outputs[2]["data"]["text/markdown"] == ["~/a"]
    assert outputs[2]["data"]["image/png"] == image
    assert resolve_path(kept["cells"][0]["source"][0].split('"')[1]) == tmp_path
