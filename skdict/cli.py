"""The skdict command (also python -m skdict).

Subcommands: demo (the built-in end-to-end run and its HTML report), embed
(images or texts to embeddings with a timm or open_clip model), and fit,
encode, describe, score and explore on the user's own embeddings. A mistake in
the input (missing file, wrong array shape, unreadable model, bad parameter,
unwritable output) prints one line and exits with code 2; output paths are
checked before any fitting or encoding starts. Ctrl-C and SIGTERM end the
command with one line and exit codes 130 and 143, leaving no temporary files
and every output as it was. Models are written and read as .skdict files
(skdict.save), which load without running code; a pickle or joblib model is
read only with --trust-pickle.
"""

import argparse
import signal
import sys
import threading

import numpy as np

from . import __version__
from ._app.files import (
    CLIError,
    check_line_count,
    check_model_output,
    check_output_dir,
    check_output_file,
    codes_path,
    first_line,
    load_bank,
    load_embeddings,
    load_codes,
    load_images,
    load_model,
    read_lines,
    save_codes,
    save_model,
)
from ._app.embed import fit_embedder, parse_model_spec, run_embed
from ._dictionary import components_of, encoded
from ._app.report import format_table


def _make_estimator(args):
    """The estimator of --method; options left unset keep the estimator's defaults."""
    options = {"max_iter": args.max_iter, "batch_size": args.batch_size}
    options = {key: value for key, value in options.items() if value is not None}
    common = dict(random_state=args.random_state, verbose=int(not args.quiet), **options)
    if args.method == "dbksvd":
        from .ksvd import DoubleBatchKSVD

        return DoubleBatchKSVD(args.n_components, n_nonzero_coefs=args.n_nonzero, **common)
    from .sae import SparseAutoencoder

    return SparseAutoencoder(args.n_components, k=args.n_nonzero, device=args.device, **common)


def _fit(args):
    output = check_model_output(args.output, inputs=[args.embeddings])
    estimator = _make_estimator(args)
    X = load_embeddings(args.embeddings)
    model = estimator.fit(X)
    path = save_model(model, output)
    _say(args, f"fitted {type(model).__name__} with {model.components_.shape[0]} atoms "
         f"on {X.shape[0]} x {X.shape[1]} embeddings; saved to {path}")
    return 0


def _model(args, path):
    return load_model(path, trust_pickle=args.trust_pickle)


def _embeddings(path, model):
    """Embeddings for `model`: its width, and magnitudes its arithmetic can code."""
    return load_embeddings(path, _n_features(model),
                           working_dtype=getattr(model, "_working_dtype", None))


def _n_features(model):
    return components_of(model).shape[1]


def _codes(args, model, X):
    """The codes of X: read from --codes (checked against X and the model), or
    encoded once here, in row chunks (a memory map stays on disk), with a progress bar."""
    n_atoms = components_of(model).shape[0]
    if getattr(args, "codes", None):
        return load_codes(args.codes, None if X is None else X.shape[0], n_atoms)
    if X is None:
        return None
    return encoded(model, X, progress=not args.quiet).codes


def _encode(args):
    output = check_output_file(codes_path(args.output), inputs=[args.model, args.embeddings])
    model = _model(args, args.model)
    X = _embeddings(args.embeddings, model)
    codes = _codes(args, model, X)
    path = save_codes(codes, output)
    _say(args, f"encoded {codes.shape[0]} rows over {codes.shape[1]} atoms "
         f"({codes.nnz / max(codes.shape[0], 1):.1f} non-zeros per row); saved to {path}")
    return 0


def _parse_embedder(spec, random_weights=False):
    """``clip:MODEL[:WEIGHTS]`` -> an unfitted CLIPEmbedder; no weights needs random_weights."""
    _, model, pretrained = parse_model_spec(spec, "--embedder", random_weights=random_weights,
                                            kinds=("clip",))
    from .embeddings import CLIPEmbedder

    return CLIPEmbedder(model=model, pretrained=pretrained)


def _fitted_embedder(spec, random_weights):
    """The embedder of --embedder, loaded: weights that cannot be read give one line."""
    return fit_embedder(_parse_embedder(spec, random_weights), spec, "--embedder")


_BANK_RECIPE = (
    "build a bank from names and vectors in Python: ConceptBank(names, vectors)"
    ".save('bank.npz'), then pass --concepts bank.npz"
)


def _load_bank(args, n_features):
    """The concept bank of --concepts (a saved bank, or a text file and --embedder)."""
    from .concepts import ConceptBank

    if not args.concepts:
        return None
    if args.concepts.endswith(".npz"):
        bank = load_bank(args.concepts)
    elif args.concepts.endswith(".npy"):
        raise CLIError(
            f"--concepts {args.concepts!r} holds vectors without names; {_BANK_RECIPE}."
        )
    elif not args.embedder:
        raise CLIError(
            "--concepts with a text file needs --embedder clip:MODEL[:PRETRAINED] to embed "
            f"the names; with vectors of your own, {_BANK_RECIPE}."
        )
    else:
        texts = read_lines(args.concepts, "concepts file", allow_blank=False)
        bank = ConceptBank.from_texts(texts, _fitted_embedder(args.embedder,
                                                              args.random_weights))
    if bank.embeddings.shape[1] != n_features:
        raise CLIError(
            f"the concept bank has {bank.embeddings.shape[1]}-dimensional embeddings but "
            f"the model's atoms have {n_features}; embed the concepts in the same space."
        )
    return bank


def _describe(args):
    from .concepts import describe_atoms

    model = _model(args, args.model)
    n_features = _n_features(model)
    bank = _load_bank(args, n_features)
    if bank is None:
        raise CLIError("describe needs --concepts (BANK.npz, or a text file with --embedder).")
    X = _embeddings(args.embeddings, model) if args.embeddings else None
    desc = describe_atoms(model, bank, top_k=args.top_k, codes=_codes(args, model, X))
    for atom in np.flatnonzero(desc.alive):
        names = ", ".join(
            f"{name} ({score:.3f})"
            for name, score in zip(desc.names[atom], desc.scores[atom])
        )
        sign = "-" if desc.signs[atom] < 0 else "+"
        print(f"atom {atom}\t{sign}\t{names}")
    return 0


def _score(args):
    from .metrics import dictionary_scores

    model = _model(args, args.model)
    n_features = _n_features(model)
    X = _embeddings(args.embeddings, model)
    bank = _load_bank(args, n_features)
    codes = _codes(args, model, X)
    scores = dictionary_scores(model, X, bank, codes=codes, baseline=bank is not None)
    n_atoms = codes.shape[1]
    n_alive = n_atoms - round(scores["dead_fraction"] * n_atoms)
    rows = [
        ["signal recovered", scores["signal_recovered"], None],
        ["explained variance", scores["explained_variance"], None],
        ["alive atoms", f"{n_alive} / {n_atoms}", None],
    ]
    for name in ("faithfulness", "specificity"):
        rows.append([name, None, None] if bank is None else [
            name, scores[name], scores[f"{name}_null"]])
    print(format_table(["score", "value", "null level"], rows))
    if bank is None:
        _say(args, "faithfulness and specificity need a concept bank: pass --concepts.")
    else:
        _say(args, "null level: the score with random concept banks of the same size "
             "(chance); a description is informative only well above it.")
    return 0


def _explore(args):
    from .explore import build_site, site_size

    inputs = [args.model, args.embeddings, args.images, args.labels, args.compare,
              args.concepts]
    check_output_dir(args.out, inputs=inputs)
    model = _model(args, args.model)
    if type(model).__name__ == "SparseCoder":
        raise CLIError("explore needs a learned dictionary (components_); a SparseCoder "
                       "has none: fit one with 'skdict fit'.")
    n_features = _n_features(model)
    X = _embeddings(args.embeddings, model)
    bank = _load_bank(args, n_features)
    images = load_images(args.images, X.shape[0]) if args.images else None
    labels = None
    if args.labels:
        labels = read_lines(args.labels, "labels file", allow_blank=True)
        check_line_count(labels, X.shape[0], args.labels, "labels file")
    compare = _model(args, args.compare) if args.compare else None
    index = build_site(model, X, args.out, bank=bank, images=images, labels=labels,
                       compare=compare, codes=_codes(args, model, X))
    n_files, n_bytes = site_size(args.out)
    _say(args, f"wrote the atom explorer to {index} ({n_files} files, "
         f"{n_bytes / 2**20:.1f} MB; atom pages load on demand)")
    return 0


def _embed(args):
    output, listing, (n_rows, width), what = run_embed(
        args.inputs, args.model, args.output, random_weights=args.random_weights,
        token=args.token, layer=args.layer, batch_size=args.batch_size, device=args.device,
        quiet=args.quiet)
    _say(args, f"embedded {n_rows} {what} with {args.model}: {n_rows} x {width} float32 "
         f"rows saved to {output}, the {what} in row order to {listing}")
    return 0


def _demo(args):
    from ._app.demo import run_demo

    return run_demo(out_dir=args.out, quick=args.quick, quiet=args.quiet)


def _say(args, message):
    if not args.quiet:
        print(message, file=sys.stderr)


def _add_codes_option(parser, required_rows):
    parser.add_argument(
        "--codes", metavar="CODES.npz",
        help="codes written by 'skdict encode' for these embeddings and this model, "
        f"used instead of encoding again ({required_rows})")


def _add_bank_options(parser):
    group = parser.add_argument_group("concept bank (names for the atoms)")
    group.add_argument("--concepts", metavar="BANK.npz|FILE.txt",
                       help="a ConceptBank saved with ConceptBank.save (.npz), or a text "
                       "file with one concept per line, embedded with --embedder")
    group.add_argument("--embedder", metavar="clip:MODEL[:WEIGHTS]",
                       help="open_clip text encoder for --concepts, e.g. "
                       "clip:ViT-B-32:/path/to/weights.safetensors (WEIGHTS: a checkpoint "
                       "file or an open_clip tag)")
    _add_random_weights(group, "the names embedded by a random CLIP mean nothing")


def _add_random_weights(parser, why):
    parser.add_argument("--random-weights", action="store_true",
                        help=f"use a model given without WEIGHTS with random weights ({why}); "
                        "without this flag such a model is refused")


def _build_parser():
    parser = argparse.ArgumentParser(prog="skdict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"skdict {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or status messages")
    reads_models = argparse.ArgumentParser(add_help=False)
    reads_models.add_argument(
        "--trust-pickle", action="store_true",
        help="also read models saved as pickle/joblib files; loading a pickle runs any "
        "code it contains, so use this only for files you made or trust")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands, [common])
    _add_embed(commands, [common])
    _add_fit(commands, [common])
    for add in (_add_encode, _add_describe, _add_score, _add_explore):
        add(commands, [common, reads_models])
    return parser


def _add_demo(commands, parents):
    demo = commands.add_parser(
        "demo", parents=parents, help="run the built-in end-to-end demonstration",
        description="Fit DoubleBatchKSVD, SparseAutoencoder and scikit-learn's "
        "MiniBatchDictionaryLearning on synthetic signals with a known dictionary and on "
        "the CLS embeddings of a small ViT trained on sklearn's digits; print one table "
        "and write DIR/report.html, its PNGs and results.json.")
    demo.add_argument("--out", default="skdict-demo", metavar="DIR",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true",
                      help="smaller problems and fewer iterations (under a minute)")
    demo.set_defaults(run=_demo)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_embed(commands, parents):
    embed = commands.add_parser(
        "embed", parents=parents, help="embed a folder of images or a file of texts",
        description="Embed the image files of a folder (.png, .jpg, .webp and other "
        "common formats, in name order) with a timm ViT or an open_clip image encoder, "
        "or the lines of a UTF-8 text file with an open_clip text encoder. Writes a "
        "float32 .npy (filled as a memory map and moved into place when complete: an "
        "interrupted run leaves no partial file) and, beside X.npy, X.inputs.txt: the "
        "inputs in row order, one image path or text per line.")
    embed.add_argument("inputs", metavar="IMAGES_DIR|TEXTS.txt")
    embed.add_argument("--model", required=True,
                       metavar="timm:NAME[:WEIGHTS]|clip:NAME[:WEIGHTS]",
                       help="the embedder: a timm model name (images only) or an open_clip "
                       "model name; WEIGHTS is a checkpoint file (state dict or "
                       ".safetensors), an open_clip tag, or 'hub' for timm's download")
    _add_random_weights(embed, "the embeddings of an untrained network mean nothing")
    embed.add_argument("--token", choices=["cls", "mean"], default=None,
                       help="timm: the class token (default) or the mean of the patch tokens")
    embed.add_argument("--layer", type=int, default=None,
                       help="timm: the block whose output is read (default: -1, the last)")
    embed.add_argument("--batch-size", type=_positive_int, default=32,
                       help="images or texts per forward pass (default: %(default)s)")
    embed.add_argument("--device", default="auto",
                       help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    embed.add_argument("-o", "--output", required=True, metavar="X.npy",
                       help="the embeddings (.npy is appended when missing); the inputs "
                       "list goes to X.inputs.txt beside it")
    embed.set_defaults(run=_embed)


def _add_fit(commands, parents):
    fit = commands.add_parser("fit", parents=parents, help="learn a dictionary from embeddings",
                              description="Learn a dictionary from a 2-D array of embeddings "
                              "(.npy, memory-mapped; .npz; or a directory of .npy shards).")
    fit.add_argument("embeddings", metavar="EMBEDDINGS")
    fit.add_argument("--method", choices=["dbksvd", "sae"], default="dbksvd",
                     help="DoubleBatchKSVD or SparseAutoencoder (default: %(default)s)")
    fit.add_argument("--n-components", type=int, default=256, metavar="K",
                     help="number of atoms (default: %(default)s)")
    fit.add_argument("--n-nonzero", type=int, default=10, metavar="k",
                     help="atoms per sample: n_nonzero_coefs or the SAE's k (default: %(default)s)")
    fit.add_argument("--max-iter", type=int, default=None,
                     help="iterations (dbksvd, default 50) or epochs (sae, default: enough "
                     "for about 2,000 steps)")
    fit.add_argument("--batch-size", type=int, default=None,
                     help="rows per iteration (dbksvd: all by default; set it for "
                     "out-of-core fits of large files) or per step (sae, default: about "
                     "n_rows / 256)")
    fit.add_argument("--device", default="auto", help="torch device for sae (default: auto)")
    fit.add_argument("--random-state", type=int, default=0)
    fit.add_argument("-o", "--output", required=True, metavar="MODEL.skdict",
                     help="the model file (.skdict format: loads without running code)")
    fit.set_defaults(run=_fit)


def _add_encode(commands, parents):
    encode = commands.add_parser("encode", parents=parents,
                                 help="sparse codes of embeddings",
                                 description="Encode embeddings with a fitted model and save "
                                 "the codes as a CSR matrix (scipy.sparse.load_npz reads it).")
    encode.add_argument("model", metavar="MODEL.skdict")
    encode.add_argument("embeddings", metavar="EMBEDDINGS")
    encode.add_argument("-o", "--output", required=True, metavar="CODES.npz",
                        help="the codes file (.npz is appended when missing)")
    encode.set_defaults(run=_encode)


def _add_describe(commands, parents):
    describe = commands.add_parser(
        "describe", parents=parents,
        help="name each atom with a concept bank",
        description="Print one line per alive atom: index, sign and its best concept names "
        "with their cosines.")
    describe.add_argument("model", metavar="MODEL.skdict")
    describe.add_argument("--embeddings", metavar="EMBEDDINGS",
                          help="data deciding which atoms are alive (default: all atoms)")
    describe.add_argument("--top-k", type=int, default=1, help="names per atom")
    _add_codes_option(describe, "they decide which atoms are alive; with --embeddings they "
                      "must have one row per embedding")
    _add_bank_options(describe)
    describe.set_defaults(run=_describe)


def _add_score(commands, parents):
    score = commands.add_parser(
        "score", parents=parents,
        help="signal recovered, explained variance, alive atoms, faithfulness, specificity",
        description="Print the signal recovered, explained variance and alive atoms on "
        "EMBEDDINGS and, with a concept bank, the faithfulness and specificity of the "
        "atoms' names next to their null levels (random banks of the same size).")
    score.add_argument("model", metavar="MODEL.skdict")
    score.add_argument("embeddings", metavar="EMBEDDINGS")
    _add_codes_option(score, "one row per embedding")
    _add_bank_options(score)
    score.set_defaults(run=_score)


def _add_explore(commands, parents):
    explore = commands.add_parser(
        "explore", parents=parents,
        help="build the offline atom explorer site",
        description="Write a static site (DIR/index.html) to browse every atom.")
    explore.add_argument("model", metavar="MODEL.skdict")
    explore.add_argument("embeddings", metavar="EMBEDDINGS")
    explore.add_argument("--out", required=True, metavar="DIR")
    explore.add_argument("--images", metavar="DIR|IMAGES.npy",
                         help="one image per embedding row: a directory of image files "
                         "(name order) or an array (n, H, W[, C])")
    explore.add_argument("--compare", metavar="MODEL2.skdict",
                         help="a second model fitted on the same embeddings, matched atom "
                         "to atom on a comparison page")
    explore.add_argument("--labels", metavar="LABELS.txt", help="one label per embedding row")
    _add_codes_option(explore, "one row per embedding")
    _add_bank_options(explore)
    explore.set_defaults(run=_explore)


class _Terminated(BaseException):
    """SIGTERM, raised where the command is, so that its cleanup (temporary files) runs.

    A BaseException, as KeyboardInterrupt is: no ``except Exception`` swallows it.
    """


def _terminate(signum, frame):
    raise _Terminated


def main(argv=None):
    """Run the ``skdict`` command line; return the exit code."""
    args = _build_parser().parse_args(argv)
    # Python's default SIGTERM action kills the process on the spot, leaving
    # temporary files behind; signal.signal works in the main thread only.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        return args.run(args)
    # OSError: a full disk or a permission refused while writing.
    except (CLIError, ValueError, ImportError, OSError) as exc:
        print(f"skdict {args.command}: error: {first_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"skdict {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except _Terminated:
        print(f"skdict {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
