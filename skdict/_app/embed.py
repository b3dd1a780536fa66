"""``skdict embed``: a folder of images or a file of texts to a float32 ``.npy`` of embeddings.

Rows go into a memory-mapped temporary file in the output's folder as they
are computed; it is renamed into place only once every row is written, so a
failure or Ctrl-C leaves neither a partial output nor a temporary file. The
inputs, one per line in row order (image paths, or the texts), are written
beside it as ``X.inputs.txt``.

Models are given as ``timm:NAME[:WEIGHTS]`` or ``clip:NAME[:WEIGHTS]`` (also
by ``--embedder`` of the commands that embed concept names); a model without
weights is refused unless random weights are asked for with
``--random-weights``.
"""

from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._staging import atomic_write
from .files import (
    CLIError,
    check_image_files,
    check_output_file,
    image_files,
    is_image_file,
    read_lines,
)

_WEIGHTS_HELP = {
    "timm": "a checkpoint file (state dict or .safetensors) or 'hub' (timm's download)",
    "clip": "a checkpoint file (state dict or .safetensors) or an open_clip tag",
}


def parse_model_spec(spec, option, *, random_weights, kinds=("timm", "clip")):
    """``KIND:NAME[:WEIGHTS]`` -> (kind, name, pretrained), with the weights chosen.

    `pretrained` is what the embedder takes: the WEIGHTS text (a file or an
    open_clip tag), True for timm's ``hub``, or ``"random"`` when
    `random_weights`. A spec without WEIGHTS and without `random_weights` is
    refused, so that no command embeds with an untrained network by default.
    """
    kind, _, rest = spec.partition(":")
    name, _, weights = rest.partition(":")
    if kind not in kinds or not name:
        forms = " or ".join(f"{kind}:NAME[:WEIGHTS]" for kind in kinds)
        raise CLIError(
            f"{option} {spec!r} is not understood; use {forms}, e.g. "
            f"{kinds[-1]}:ViT-B-32:/path/to/weights.safetensors."
        )
    if random_weights:
        if weights:
            raise CLIError(
                f"{option} {spec!r} names weights but --random-weights asks for random "
                "ones; drop one of them."
            )
        return kind, name, "random"
    if not weights:
        raise CLIError(
            f"{option} {spec!r} names no weights: add them as {kind}:{name}:WEIGHTS "
            f"(WEIGHTS: {_WEIGHTS_HELP[kind]}), or pass --random-weights to use random "
            "weights on purpose (the embeddings of an untrained network mean nothing)."
        )
    if weights == "random":
        raise CLIError(
            f"{option} {spec!r}: ask for random weights with --random-weights (a weights "
            "file named 'random' is ./random)."
        )
    if kind == "timm" and weights == "hub":
        return kind, name, True
    return kind, name, weights


def fit_embedder(embedder, spec, option):
    """`embedder` loaded; weights that cannot be used give one line naming `spec`."""
    try:
        return embedder.fit()
    # A missing weights file, an unreachable hub (hub_download's RuntimeError), a
    # file that is not the model's weights or a layer it lacks (ValueError).
    except (OSError, RuntimeError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"{option} {spec!r}: {message}") from exc


def _embeddings_path(path):
    """The file ``skdict embed`` writes: `path`, with ``.npy`` appended if missing."""
    path = Path(path)
    return path if path.suffix == ".npy" else path.with_name(path.name + ".npy")


def _inputs_path(output):
    """The list of inputs written beside ``X.npy``: ``X.inputs.txt``."""
    return Path(output).with_suffix(".inputs.txt")


def _read_inputs(source, kind, spec):
    """("images", paths) for a folder of images, ("texts", lines) for a text file."""
    source = Path(source)
    if not source.exists():
        raise CLIError(f"INPUT {str(source)!r} does not exist.")
    if source.is_dir():
        files = image_files(source)
        if not files:
            raise CLIError(
                f"folder {str(source)!r} holds no image files (.png, .jpg, .webp, ...); "
                "give a folder of images, or a text file with one text per line."
            )
        for file in files:
            if "\n" in file.name or "\r" in file.name:
                raise CLIError(
                    f"image file name {file.name!r} holds a line break, which the list of "
                    "inputs (one per line) cannot record; rename the file."
                )
        return "images", [str(file) for file in files]
    if kind == "timm":
        raise CLIError(
            f"--model {spec!r} embeds images only, and INPUT {str(source)!r} is a file: give "
            "a folder of images, or embed texts with a clip: model."
        )
    if is_image_file(source):
        raise CLIError(
            f"INPUT {str(source)!r} is one image; give the folder that holds the images."
        )
    return "texts", read_lines(source, "texts file", allow_blank=False)


def _make_embedder(kind, name, pretrained, *, token, layer, batch_size, device):
    from ..embeddings import CLIPEmbedder, TimmEmbedder

    if kind == "clip":
        if token is not None or layer is not None:
            raise CLIError(
                "--token and --layer choose what a timm ViT gives; a clip: model gives its "
                "joint image-text embedding: drop them."
            )
        return CLIPEmbedder(name, pretrained=pretrained, batch_size=batch_size, device=device)
    options = {key: value for key, value in (("token", token), ("layer", layer))
               if value is not None}
    return TimmEmbedder(name, pretrained=pretrained, batch_size=batch_size, device=device,
                        **options)


def _embed_images(embedder, files):
    try:
        return embedder.transform(files)
    # pillow reports a bad file as OSError, SyntaxError or ValueError, often
    # without its name: find the culprit of the batch and name it.
    except (OSError, SyntaxError, ValueError):
        check_image_files([Path(file) for file in files])
        raise


def _write_rows(encode, items, output, listing, width, *, batch_size, quiet, unit):
    """Write encode(batch) for every batch of `items` into `output`, and `items` into `listing`.

    Both appear only when complete: the inputs list first, the array last.
    """
    with atomic_write(output) as tmp, atomic_write(listing) as tmp_listing:
        # surrogateescape keeps the exact bytes of file names that are not UTF-8
        tmp_listing.write_text("".join(f"{item}\n" for item in items), encoding="utf-8",
                               errors="surrogateescape")
        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                         shape=(len(items), width))
        with tqdm(total=len(items), disable=quiet, desc="embed", unit=unit) as bar:
            for start in range(0, len(items), batch_size):
                batch = items[start:start + batch_size]
                rows[start:start + len(batch)] = encode(batch)
                bar.update(len(batch))
        rows.flush()
        del rows


def run_embed(source, spec, output, *, random_weights=False, token=None, layer=None,
              batch_size=32, device="auto", quiet=True):
    """Embed the images of folder `source` (or the lines of text file `source`) into `output`.

    Returns
    -------
    output : Path
        The ``.npy`` written (``.npy`` is appended when missing).
    listing : Path
        The inputs in row order, one per line, beside it.
    shape : tuple of int
        (n_rows, width).
    what : {"images", "texts"}
    """
    kind, name, pretrained = parse_model_spec(spec, "--model", random_weights=random_weights)
    embedder = _make_embedder(kind, name, pretrained, token=token, layer=layer,
                              batch_size=batch_size, device=device)
    output = check_output_file(_embeddings_path(output), inputs=[source])
    listing = check_output_file(_inputs_path(output), inputs=[source],
                                option="the inputs list of -o")
    what, items = _read_inputs(source, kind, spec)
    embedder = fit_embedder(embedder, spec, "--model")
    encode = embedder.encode_text if what == "texts" else partial(_embed_images, embedder)
    output.parent.mkdir(parents=True, exist_ok=True)
    width = embedder.n_features_out_
    _write_rows(encode, items, output, listing, width, batch_size=batch_size, quiet=quiet,
                unit=what[:-1])
    return output, listing, (len(items), width), what
