"""``fervid serve``: the HTTP service (``app``), its JSON shapes (``schemas``), its error
answers (``errors``) and the guarded reading of uploads (``uploads``). Needs the serve extra."""
