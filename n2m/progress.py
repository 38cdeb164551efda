"""Progress bars of the long jobs, and their ``--quiet``.

A job whose settings have ``quiet`` is decorated with :func:`honours_quiet`; every bar made by :func:`bar` while it
runs (in whichever module draws it) is drawn unless ``settings.quiet``. One switch per job, instead of a flag threaded
through every function that draws a bar.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

from tqdm import tqdm

F = TypeVar("F", bound=Callable[..., Any])
_SHOWN: ContextVar[bool] = ContextVar("n2m_progress_shown", default=True)


@contextlib.contextmanager
def shown(enabled: bool) -> Iterator[None]:
    """Within the block, :func:`bar` draws its bars only when ``enabled``."""
    token = _SHOWN.set(enabled)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def bar(iterable: Iterable[Any] | None = None, **options: Any) -> tqdm:
    """``tqdm(iterable, **options)``, disabled (whatever ``options`` say) while bars are not :func:`shown`."""
    if not _SHOWN.get():
        options["disable"] = True
    return tqdm(iterable, **options)


def honours_quiet(job: F) -> F:
    """Decorate a job function whose first argument, its settings, has ``quiet``: its bars are drawn unless quiet."""

    @functools.wraps(job)
    def run(settings: Any, *more: Any, **options: Any) -> Any:
        with shown(not settings.quiet):
            return job(settings, *more, **options)

    run.honours_quiet = True  # type: ignore[attr-defined]  # tests check every job with --quiet carries it
    return run  # type: ignore[return-value]
