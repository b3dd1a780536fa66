"""Sphinx configuration: numpydoc, autosummary and sphinx-gallery; builds offline."""

import skdict

project = "skdict"
author = "skdict developers"
copyright = "skdict developers"
release = skdict.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

autosummary_generate = True
autodoc_default_options = {"inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("skdict",),
    "download_all_examples": False,
    "remove_config_comments": True,
    # The timing pages load jQuery and DataTables from CDNs; the docs stay offline.
    "write_computation_times": False,
}

html_theme = "pydata_sphinx_theme"
html_title = f"skdict {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": False,
}
html_static_path = []
