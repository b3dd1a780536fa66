"""What the command line and the demo need beyond the library itself.

``files``: reading and writing the CLI's inputs and outputs (arrays, text
lists, model files); ``demo``: ``skdict demo``, the end-to-end run on built-in
data; ``report``: the HTML report and plain-text tables; ``explore_data`` and
``explore_static/``: the data and static files of the site that
:func:`skdict.explore.build_site` writes.
"""
