"""Concept banks and naming dictionary atoms with human concepts.

A :class:`ConceptBank` holds named directions (CLIP text embeddings of captions,
a classifier's class directions, ...) in the space of a dictionary's atoms.
:func:`describe_atoms` names every atom with the concepts closest to it by
cosine, as the seed paper names atoms with the caption whose CLIP text
embedding matches them.
"""

from collections import Counter
from numbers import Integral

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._dictionary import atom_usage, check_codes, components_from, encoded, is_estimator_like
from ._null_dictionary import gaussian_sampler
from ._rows import _centred_unit_rows, _unit_rows
from ._validation import check_samples

# Atoms named per block, so that the (atoms x concepts) cosine matrix of a large
# dictionary against a large bank never lives in memory at once.
_ATOM_CHUNK = 1024


class ConceptBank:
    """Named unit-norm concept directions to describe dictionary atoms with.

    Parameters
    ----------
    names : sequence of str
        One distinct, non-empty name per concept.
    embeddings : array-like of shape (n_concepts, n_features)
        Finite, non-zero concept vectors, in the space of the atoms they will
        name (e.g. CLIP text embeddings for atoms of CLIP image embeddings).
        Stored normalised to unit norm, as float32.
    center : bool, default=True
        SpLiCE-style centring (Bhalla et al., 2024): before any cosine with
        atoms or data, subtract the bank's mean vector from every concept and
        renormalise. Text and image embeddings of CLIP sit in two narrow cones
        apart (the "modality gap"); without centring every caption has nearly
        the same cosine with every image, and the most generic caption names
        most atoms. Metrics centre the data side too (their ``center``
        parameter). Needs at least two concepts.

    Attributes
    ----------
    names : list of str
        Concept names.
    embeddings : ndarray of shape (n_concepts, n_features), float32
        Unit-norm concept vectors (before centring).
    center : bool
        Whether cosines use the centred concepts.

    See Also
    --------
    describe_atoms : Name the atoms of a dictionary with a bank.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict import ConceptBank
    >>> bank = ConceptBank(["up", "right", "down"], [[0, 2], [1, 0], [0, -1]])
    >>> len(bank), bank.n_features
    (3, 2)
    >>> bank.embeddings[0]
    array([0., 1.], dtype=float32)
    """

    def __init__(self, names, embeddings, *, center=True):
        self.names = _check_names(names)
        E = check_samples(embeddings, "embeddings", dtype=np.float64)
        if E.shape[0] != len(self.names):
            raise ValueError(
                f"names has {len(self.names)} entries but embeddings has {E.shape[0]} "
                "rows; pass one embedding per name."
            )
        zero_rows = np.flatnonzero(np.linalg.norm(E, axis=1) == 0)
        if zero_rows.size:
            zero = int(zero_rows[0])
            raise ValueError(
                f"embeddings row {zero} ({self.names[zero]!r}) is zero and has no "
                "direction; drop that concept."
            )
        if not isinstance(center, (bool, np.bool_)):
            raise TypeError(f"center must be True or False, got {center!r}.")
        if center and len(self.names) < 2:
            raise ValueError(
                "center=True subtracts the bank's mean concept, which leaves nothing "
                "of a single concept; pass at least two concepts or center=False."
            )
        self.embeddings = _unit_rows(E).astype(np.float32)
        self.center = bool(center)

    def __len__(self):
        return len(self.names)

    def __repr__(self):
        return (
            f"ConceptBank(n_concepts={len(self)}, n_features={self.n_features}, "
            f"center={self.center})"
        )

    @property
    def n_features(self):
        """Dimension of the concept vectors."""
        return self.embeddings.shape[1]

    @classmethod
    def from_texts(cls, texts, embedder, *, center=True):
        """Bank of captions embedded by a text encoder.

        Parameters
        ----------
        texts : sequence of str
            Captions; they are also the concept names.
        embedder : object with an ``encode_text(texts)`` method
            E.g. :class:`skdict.CLIPEmbedder`; returns an array (or a torch
            tensor) of shape (n_texts, n_features).
        center : bool, default=True
            See :class:`ConceptBank`.

        Returns
        -------
        bank : ConceptBank

        Examples
        --------
        >>> import numpy as np
        >>> from skdict import ConceptBank
        >>> class Letters:  # a stand-in for CLIPEmbedder
        ...     def encode_text(self, texts):
        ...         return np.array([[t.count("a"), t.count("b"), 1.0] for t in texts])
        >>> ConceptBank.from_texts(["a cat", "a bird", "a baobab"], Letters())
        ConceptBank(n_concepts=3, n_features=3, center=True)
        """
        if not callable(getattr(embedder, "encode_text", None)):
            raise TypeError(
                "embedder must have an encode_text(texts) method returning one "
                f"embedding per text (e.g. skdict.CLIPEmbedder); got {embedder!r}."
            )
        texts = _check_names(texts, name="texts")
        return cls(texts, _to_numpy(embedder.encode_text(texts)), center=center)

    @classmethod
    def from_class_head(cls, projector, *, center=True):
        """Bank of a ViT classifier's class directions, to name atoms of its residual space.

        Class ``c``'s direction is the residual-stream direction that raises its
        logit most, through the model's final LayerNorm and linear head:
        ``P (gamma * W_c)``, with ``W_c`` the head's weight row, ``gamma`` the
        norm's scale and ``P`` the centring LayerNorm applies (the mean of a
        direction's entries does not reach the logits). A small residual change
        ``delta`` orthogonal to the current (centred) activation moves logit
        ``c`` by ``(P (gamma * W_c)) . delta / sigma``, ``sigma`` the
        activation's standard deviation.

        Parameters
        ----------
        projector : ClassEmbeddingProjector or timm VisionTransformer
            A fitted :class:`skdict.ClassEmbeddingProjector` (its ``model_``
            and ``classes_`` are used) or a timm classifier itself (classes
            named "0", "1", ...).
        center : bool, default=True
            See :class:`ConceptBank`.

        Returns
        -------
        bank : ConceptBank
            One concept per class, named ``str(class)``.
        """
        model = getattr(projector, "model_", projector)
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        if getattr(head, "weight", None) is None:
            raise TypeError(
                "projector must be a fitted ClassEmbeddingProjector or a timm "
                f"classifier with a linear head; got {type(projector).__name__}."
            )
        W = _to_numpy(head.weight).astype(np.float64)
        norm = _final_norm(model)
        if getattr(norm, "weight", None) is not None:
            W = W * _to_numpy(norm.weight)[None, :]
        if type(norm).__name__ == "LayerNorm":
            W = W - W.mean(axis=1, keepdims=True)
        classes = getattr(projector, "classes_", range(W.shape[0]))
        return cls([str(c) for c in classes], W, center=center)

    def save(self, path):
        """Write the bank to a ``.npz`` file (numpy appends ``.npz`` if missing).

        Parameters
        ----------
        path : str or path-like
            Destination file.
        """
        np.savez(
            path,
            names=np.asarray(self.names, dtype=str),
            embeddings=self.embeddings,
            center=np.bool_(self.center),
        )

    @classmethod
    def load(cls, path):
        """Read a bank written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
            A ``.npz`` file from :meth:`save`.

        Returns
        -------
        bank : ConceptBank

        Examples
        --------
        >>> import os, tempfile
        >>> from skdict import ConceptBank
        >>> bank = ConceptBank(["x", "y"], [[1.0, 0.0], [0.0, 1.0]])
        >>> path = os.path.join(tempfile.mkdtemp(), "bank.npz")
        >>> bank.save(path)
        >>> ConceptBank.load(path).names
        ['x', 'y']
        """
        with np.load(path, allow_pickle=False) as data:
            missing = {"names", "embeddings", "center"} - set(data.files)
            if missing:
                raise ValueError(
                    f"{path} is not a ConceptBank file: it lacks {sorted(missing)}; "
                    "write banks with ConceptBank.save."
                )
            names, center = data["names"], data["center"]
            # save writes a 1-D array of str and one bool; anything else is another file.
            if names.ndim != 1 or names.dtype.kind != "U":
                raise ValueError(
                    f"names is a {names.ndim}-D array of {names.dtype}; a bank's names are "
                    "a 1-D array of strings (write banks with ConceptBank.save)."
                )
            if center.shape != () or center.dtype != bool:
                raise ValueError(f"center must be one bool, not {center!r}.")
            try:
                return cls(names.tolist(), data["embeddings"], center=bool(center))
            except TypeError as exc:  # an empty name: bad content, not a caller's mistake
                raise ValueError(str(exc)) from exc


def describe_atoms(estimator_or_components, bank, *, X=None, top_k=1, codes=None):
    """Name every atom of a dictionary with its closest concepts.

    Atom ``k`` is named by the concepts ``m`` of highest cosine
    ``cos(s_k d_k, t_m)``, ``t_m`` the (centred, see :class:`ConceptBank`)
    concept vectors. The sign ``s_k`` matters for dictionaries with signed
    codes such as K-SVD: an atom whose mean non-zero code on X is negative is
    used as ``-d_k``, and is named as such.

    Parameters
    ----------
    estimator_or_components : estimator or array-like of shape (n_components, n_features)
        A fitted dictionary learner (or a Pipeline ending in one), or the
        atoms themselves as rows.
    bank : ConceptBank
        Concepts in the atoms' space.
    X : array-like of shape (n_samples, n_features), default=None
        Data to find dead atoms and atom signs with (the input of the
        Pipeline when `estimator_or_components` is one). Needs an estimator.
        Without X every atom counts as alive with sign +1.
    top_k : int, default=1
        Concepts per atom, best first.
    codes : array-like or sparse matrix of shape (n_samples, n_components), default=None
        The estimator's codes of some rows (``transform(X)``, or the file
        ``skdict encode`` writes): dead atoms and atom signs are read from them
        instead of encoding X. With X too, they must be the codes of X.

    Returns
    -------
    description : sklearn.utils.Bunch
        names : ndarray of str, shape (n_components, top_k)
            Concept names, best first.
        indices : ndarray of int, shape (n_components, top_k)
            Their indices in `bank`.
        scores : ndarray of float, shape (n_components, top_k)
            Their cosines with the signed atom, in [-1, 1].
        alive : ndarray of bool, shape (n_components,)
            Whether some row of X uses the atom (all True without X).
        signs : ndarray of int, shape (n_components,)
            +1, or -1 for atoms named by their opposite direction.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict import ConceptBank, describe_atoms
    >>> bank = ConceptBank(["east", "north", "west"], [[1, 0], [0, 1], [-1, 0]],
    ...                    center=False)
    >>> atoms = np.array([[0.9, 0.1], [0.1, 0.9]])
    >>> describe_atoms(atoms, bank, top_k=2).names
    array([['east', 'north'],
           ['north', 'east']], dtype='<U5')
    """
    bank = check_bank(bank)
    if not isinstance(top_k, Integral) or not 1 <= top_k <= len(bank):
        raise ValueError(
            f"top_k must be an int between 1 and the bank size ({len(bank)}), got {top_k!r}."
        )
    if X is not None and not is_estimator_like(estimator_or_components):
        raise TypeError(
            "X needs an estimator to code it; pass the fitted dictionary "
            "learner instead of its components, or leave X=None."
        )
    D = components_from(estimator_or_components)
    check_same_space(D, bank)
    if X is not None:
        run = encoded(estimator_or_components, X, codes)
        alive, signs = run.alive, run.signs
    elif codes is not None:
        alive, signs = atom_usage(check_codes(codes, _n_rows(codes), D.shape[0]).tocsc())
    else:
        alive, signs = np.ones(D.shape[0], dtype=bool), np.ones(D.shape[0], dtype=int)
    indices, scores = top_concepts(D * signs[:, None], concept_vectors(bank), top_k)
    return Bunch(
        names=np.asarray(bank.names, dtype=str)[indices],
        indices=indices,
        scores=scores,
        alive=alive,
        signs=signs,
    )


def check_bank(bank):
    if not isinstance(bank, ConceptBank):
        raise TypeError(
            f"bank must be a skdict.ConceptBank, got {type(bank).__name__}; build one "
            "with ConceptBank(names, embeddings) or ConceptBank.from_texts."
        )
    return bank


def check_same_space(D, bank):
    if D.shape[1] != bank.n_features:
        raise ValueError(
            f"The atoms have {D.shape[1]} features but the bank's concepts have "
            f"{bank.n_features}; build the bank in the space the dictionary was "
            "fitted in (after every Pipeline step before it)."
        )


def concept_vectors(bank, center=True):
    """The vectors cosines are taken with: centred and renormalised when the bank
    centres and `center` allows it, the unit embeddings otherwise."""
    return _centred_unit_rows(bank.embeddings, bank.center and center)


def random_bank(bank, random_state, distribution="gaussian"):
    """A bank like `bank` (size, dimension, names, centring) of random directions.

    ``"gaussian"`` draws from the normal distribution with the bank's own mean
    and covariance (of its unit embeddings), so the random concepts share the
    bank's anisotropy; ``"sphere"`` draws uniformly on the unit sphere.
    """
    return RandomBanks(bank, distribution).draw(check_random_state(random_state))


class RandomBanks:
    """Draws of :func:`random_bank`; the Gaussian's thin SVD is computed once for all draws."""

    def __init__(self, bank, distribution="gaussian"):
        self.bank, self.distribution = bank, distribution
        self.shape = bank.embeddings.shape
        if distribution != "sphere":
            self._gaussian = gaussian_sampler(bank.embeddings)

    def draw(self, rng):
        """One random bank, drawn with the generator `rng`."""
        bank = self.bank
        if self.distribution == "sphere":
            vectors = rng.standard_normal(self.shape)
        else:
            vectors = self._gaussian(rng, self.shape[0])
        return ConceptBank(bank.names, vectors, center=bank.center)


def _n_rows(codes):
    shape = getattr(codes, "shape", None)
    return shape[0] if shape is not None and len(shape) == 2 else np.asarray(codes).shape[0]


def top_concepts(atoms, T, top_k):
    """Indices and cosines of the `top_k` rows of `T` closest to each row of `atoms`."""
    atoms = _unit_rows(np.asarray(atoms, dtype=np.float64))
    n_atoms = atoms.shape[0]
    indices = np.empty((n_atoms, top_k), dtype=np.intp)
    scores = np.empty((n_atoms, top_k))
    for start in range(0, n_atoms, _ATOM_CHUNK):
        rows = slice(start, start + _ATOM_CHUNK)
        cos = atoms[rows] @ T.T
        if top_k == 1:
            part = np.argmax(cos, axis=1)[:, None]
        elif top_k < T.shape[0]:
            part = np.argpartition(-cos, top_k - 1, axis=1)[:, :top_k]
        else:
            part = np.broadcast_to(np.arange(T.shape[0]), cos.shape)
        part_cos = np.take_along_axis(cos, part, axis=1)
        order = np.argsort(-part_cos, axis=1, kind="stable")
        indices[rows] = np.take_along_axis(part, order, axis=1)
        scores[rows] = np.take_along_axis(part_cos, order, axis=1)
    return indices, scores


def _check_names(names, name="names"):
    if isinstance(names, str) or not hasattr(names, "__len__"):
        raise TypeError(f"{name} must be a sequence of strings, got {names!r}.")
    names = list(names)
    if not names:
        raise ValueError(f"{name} is empty; a ConceptBank needs at least one concept.")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise TypeError(f"{name} must hold non-empty strings only; got {bad[0]!r}.")
    repeated = [n for n, count in Counter(names).items() if count > 1]
    if repeated:
        raise ValueError(
            f"{name} must be distinct; {repeated[0]!r} appears more than once."
        )
    return names


def _to_numpy(array):
    """A numpy copy of an array or torch tensor (on any device)."""
    if hasattr(array, "detach"):
        array = array.detach().float().cpu().numpy()
    return np.asarray(array)


def _final_norm(model):
    """The norm applied just before a timm model's head (fc_norm if pooled)."""
    fc_norm = getattr(model, "fc_norm", None)
    if fc_norm is not None and type(fc_norm).__name__ != "Identity":
        return fc_norm
    return getattr(model, "norm", None)
