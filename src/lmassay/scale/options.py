"""The ``--ray`` / ``--ray-workers`` flags: their values and their checks, shared by the commands
that score (``attest``, ``reference build``)."""

from __future__ import annotations

from lmassay.errors import Check

LOCAL = "local"
"""``--ray local``: start a private Ray cluster on this machine for the run."""


def ray_checks(ray: str | None, workers: int | None) -> list[Check]:
    """Each flag's own range (whether the address answers is checked when connecting)."""
    return [
        (
            ray is None or (bool(ray.strip()) and ray == ray.strip()),
            f"--ray {ray!r} is not an address",
            "pass local, or the address of a running cluster (HOST:PORT, ray://HOST:PORT, auto)",
        ),
        (
            workers is None or workers >= 1,
            f"--ray-workers {workers} is below 1",
            "use 1 or more (or leave it unset: one per GPU, else one per CPU)",
        ),
        (
            workers is None or ray is not None,
            "--ray-workers was given without --ray",
            "add --ray local (or --ray ADDRESS), or drop --ray-workers",
        ),
    ]
