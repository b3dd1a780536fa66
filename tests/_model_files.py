"""Tampering with model files: a copy with its JSON edited or members replaced."""

import io
import json
import zipfile

import numpy as np


def rewrite_model(path, out=None, edit=None, arrays=None, members=None):
    """Copy the model file `path` to `out` (default: ``tampered.skdict`` beside it).

    `edit` changes the parsed ``model.json`` in place; `arrays` replaces
    ``KEY.npy`` members by arrays; `members` replaces raw members by bytes.
    """
    with zipfile.ZipFile(path) as archive:
        content = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(content["model.json"])
    if edit:
        edit(metadata)
    content["model.json"] = json.dumps(metadata).encode()
    for key, array in (arrays or {}).items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array)
        content[f"{key}.npy"] = buffer.getvalue()
    content.update(members or {})
    out = path.with_name("tampered.skdict") if out is None else out
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in content.items():
            archive.writestr(name, data)
    return out
