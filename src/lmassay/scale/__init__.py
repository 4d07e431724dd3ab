"""Scale out: score on a Ray cluster (:mod:`lmassay.scale.ray_scoring`).

Ray is imported only when a run asks for it (``--ray``), so the rest of lmassay does not pay for
its start-up.
"""
