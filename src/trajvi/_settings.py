"""``trajvi.settings``: options that apply to every fit and prediction trajvi runs."""

from __future__ import annotations

#: Torch threads of trajvi's fits and predictions when neither ``trajvi.settings.num_threads`` nor
#: ``scvi.settings.num_threads`` is set (benchmarks/threads.py; docs/performance.md, "CPU threads").
DEFAULT_NUM_THREADS = 1


class TrajVISettings:
    """Options of trajvi as a whole (``trajvi.settings``).

    Attributes
    ----------
    num_threads
        Torch CPU threads while trajvi trains (both phases and the residual-penalty search), encodes and
        predicts; the caller's thread count is restored afterwards. ``None`` (default) uses
        ``scvi.settings.num_threads`` when it is set, else ``1``: on a 2-core machine shared with other
        processes, 2 threads made a phase-1 epoch 10 to 30 times slower than 1 (docs/performance.md, "CPU
        threads"). Set it higher on a CPU that trajvi has to itself.
    flush_denormal
        Whether trajvi's fits and predictions run with subnormal float32 values flushed to zero on the CPU
        (``torch.set_flush_denormal``; default ``True``), restoring the caller's mode afterwards. Arithmetic on
        subnormal values (below about 1.2e-38, as an Adam moment decaying from a gradient that vanished)
        made a fused Adam step 24x and batch normalisation 5x slower here (``benchmarks/subnormals.py``);
        flushed, they cost nothing, and values that small change no result a user can see. It applies to
        the calling thread, the one that trains when ``num_threads`` is 1; CPUs without the mode ignore it.

    Examples
    --------
    >>> import trajvi
    >>> trajvi.settings.num_threads = 4
    """

    def __init__(self) -> None:
        self._num_threads: int | None = None
        self._flush_denormal = True

    @property
    def num_threads(self) -> int | None:
        """Torch CPU threads of trajvi's fits and predictions (``None``: scvi-tools' setting, else 1)."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            msg = f"trajvi.settings.num_threads={value!r}; it must be a positive integer or None."
            raise ValueError(msg)
        self._num_threads = value

    @property
    def flush_denormal(self) -> bool:
        """Whether fits and predictions flush subnormal float32 values to zero on the CPU (default ``True``)."""
        return self._flush_denormal

    @flush_denormal.setter
    def flush_denormal(self, value: bool) -> None:
        if not isinstance(value, bool):
            msg = f"trajvi.settings.flush_denormal={value!r}; it must be True or False."
            raise ValueError(msg)
        self._flush_denormal = value

    def __repr__(self) -> str:
        return f"TrajVISettings(num_threads={self._num_threads!r}, flush_denormal={self._flush_denormal!r})"


settings = TrajVISettings()
