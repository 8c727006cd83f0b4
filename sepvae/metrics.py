"""Per-utterance separation scores: BSS Eval v3 SDR/SIR/SAR, SI-SDR, wide-band PESQ, STOI.

:func:`bss_eval` computes exactly what ``mir_eval.separation.bss_eval_sources`` computes
(512-tap time-invariant distortion filters, estimates already ordered): the same
least-squares projections and time-domain energies, agreeing to 1e-9 dB or better. It is
faster because it builds the Gram matrix of the delayed references once for all
estimates, solves it by Cholesky instead of LU, solves each source's own (Toeplitz) system
by Levinson's recursion, and does every correlation and filtering with one batch of real
FFTs.

A score that is undefined (silent or too-short signal, a PESQ failure) is NaN, with an
:class:`UndefinedMetricWarning`; an evaluation counts the NaNs of its table to report
"PESQ undefined for N scores".

Only numpy is imported with this module; scipy, pesq and pystoi inside the functions that use
them, so that importing it (as the CLI does for --help) stays cheap.
"""

from __future__ import annotations

import math
import warnings
import numpy as np

METRICS = ("sdr", "sir", "sar", "si_sdr", "pesq", "stoi")

# BSS Eval v3's distortion filter length (mir_eval's and the Matlab toolbox's default).
BSS_FILTER_LENGTH = 512

PESQ_SAMPLE_RATE = 16_000

class UndefinedMetricWarning(UserWarning):
    """A metric could not be computed for a signal and is reported as NaN."""


def bss_eval(
    references: np.ndarray, estimates: np.ndarray, filter_length: int = BSS_FILTER_LENGTH
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BSS Eval v3 ``(sdr, sir, sar)`` in dB of each estimate against its own reference.

    Same numbers as ``mir_eval.separation.bss_eval_sources(references, estimates,
    compute_permutation=False)[:3]``. Where mir_eval raises on an all-zero reference or
    estimate, this gives NaN for that source (a silent reference is also left out of the
    interference subspace of the others) with an :class:`UndefinedMetricWarning`.

    An estimate that lies in the span of the references, such as the unprocessed mixture,
    has no artifacts: its SAR is then rounding noise (150 dB or more), as in mir_eval.

    Shape:
        references, estimates: ``(sources, samples)`` (or ``(samples,)`` for one source).
        returns: three arrays ``(sources,)``.
    """
    from scipy import fft

    references = _as_sources(references, "references")
    estimates = _as_sources(estimates, "estimates")
    if references.shape != estimates.shape:
        raise ValueError(
            f"bss_eval: references {references.shape} and estimates {estimates.shape} differ"
        )
    n_sources, n_samples = references.shape
    if n_samples == 0:
        raise ValueError("bss_eval: signals have zero samples")
    if filter_length < 1:
        raise ValueError(f"bss_eval: filter_length must be >= 1, got {filter_length}")
    sdr, sir, sar = (np.full(n_sources, np.nan) for _ in range(3))

    usable_ref = np.any(references != 0, axis=1) & np.all(np.isfinite(references), axis=1)
    usable_est = np.any(estimates != 0, axis=1) & np.all(np.isfinite(estimates), axis=1)
    scored = usable_ref & usable_est
    for j in np.flatnonzero(~scored):
        what = "reference" if not usable_ref[j] else "estimate"
        _undefined(f"BSS Eval: source {j}: {what} is silent or not finite")
    if not scored.any():
        return sdr, sir, sar

    basis = references[usable_ref]  # the delayed copies of these span the projections
    n_basis = basis.shape[0]
    position = np.cumsum(usable_ref) - 1  # index of each usable reference within basis
    targets = np.flatnonzero(scored)
    scored_estimates = estimates[targets]
    own = position[targets]

    flen = filter_length
    n_out = n_samples + flen - 1
    n_fft = fft.next_fast_len(n_out, real=True)
    basis_f = fft.rfft(basis, n=n_fft, axis=-1)  # (n_basis, F)
    estimate_f = fft.rfft(scored_estimates, n=n_fft, axis=-1)  # (n_targets, F)

    # Correlations at lags -(flen-1)..(flen-1): xcorr_ij[k] = sum_n b_i[n] b_j[n + k].
    # n_fft >= n_samples + flen - 1, so the circular correlation equals the linear one.
    xcorr = fft.irfft(basis_f.conj()[:, None, :] * basis_f[None, :, :], n=n_fft, axis=-1)
    # <estimate, b_i delayed by a> for a = 0..flen-1.
    cross = fft.irfft(basis_f.conj()[None, :, :] * estimate_f[:, None, :], n=n_fft, axis=-1)
    cross = cross[..., :flen]  # (n_targets, n_basis, flen)

    # Own projection: onto the delayed copies of the estimate's own reference. Its Gram
    # matrix is symmetric Toeplitz: Levinson's O(flen^2) instead of a dense solve.
    own_coef = np.stack(
        [_solve_toeplitz(xcorr[k, k, :flen], cross[row, k]) for row, k in enumerate(own)]
    )
    own_proj = fft.irfft(fft.rfft(own_coef, n=n_fft, axis=-1) * basis_f[own], n=n_fft, axis=-1)
    own_proj = own_proj[:, :n_out]
    # Full projection: onto the delayed copies of all references.
    if n_basis == 1:
        full_proj = own_proj
    else:
        # G[(i, a), (j, b)] = <b_i delayed by a, b_j delayed by b> = xcorr_ij[a - b]:
        # one gather straight into the (n_basis * flen)^2 layout.
        i, a, j, b = np.ix_(range(n_basis), range(flen), range(n_basis), range(flen))
        gram = xcorr[i, j, (a - b) % n_fft].reshape(n_basis * flen, n_basis * flen)
        rhs = cross.reshape(len(targets), n_basis * flen).T
        full_coef = _solve(gram, rhs).T.reshape(len(targets), n_basis, flen)
        full_f = (fft.rfft(full_coef, n=n_fft, axis=-1) * basis_f[None]).sum(axis=1)
        full_proj = fft.irfft(full_f, n=n_fft, axis=-1)[:, :n_out]

    padded = np.zeros((len(targets), n_out))
    padded[:, :n_samples] = scored_estimates
    # As mir_eval: s_filt = own_proj, e_interf = full - own, e_artif = estimate - full.
    target_energy = _energy(own_proj)
    sdr[targets] = _db(target_energy, _energy(padded - own_proj))
    sir[targets] = _db(target_energy, _energy(full_proj - own_proj))
    sar[targets] = _db(_energy(full_proj), _energy(padded - full_proj))
    return sdr, sir, sar


def si_sdr(reference: np.ndarray, estimate: np.ndarray, zero_mean: bool = True) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), means removed first by default.

    Shape:
        reference, estimate: ``(samples,)``.
    """
    reference = _as_signal(reference, "reference")
    estimate = _as_signal(estimate, "estimate")
    _check_same_length(reference, estimate, "si_sdr")
    if zero_mean:
        reference = reference - reference.mean()
        estimate = estimate - estimate.mean()
    reference_energy = np.dot(reference, reference)
    if reference_energy == 0 or not np.any(estimate) or not np.all(np.isfinite(estimate)):
        return _undefined("SI-SDR: reference or estimate is silent or not finite")
    target = np.dot(estimate, reference) / reference_energy * reference
    return float(_db(np.dot(target, target), np.dot(estimate - target, estimate - target)))


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO, about 1.0-4.64), computed at 16 kHz.

    Signals at another rate are resampled to 16 kHz first. A silent or non-finite signal,
    one shorter than PESQ accepts (1/4 s) or one in which PESQ detects no utterance gives
    NaN and an :class:`UndefinedMetricWarning`, never an exception.

    Shape:
        reference, estimate: ``(samples,)``.
    """
    from pesq import PesqError, pesq

    reference = _as_signal(reference, "reference")
    estimate = _as_signal(estimate, "estimate")
    _check_same_length(reference, estimate, "pesq_wb")
    for name, signal in (("reference", reference), ("estimate", estimate)):
        if not np.all(np.isfinite(signal)):
            return _undefined(f"PESQ: {name} is not finite")
        if not np.any(signal):
            return _undefined(f"PESQ: {name} is silent")
    reference = _resample(reference, sample_rate, PESQ_SAMPLE_RATE)
    estimate = _resample(estimate, sample_rate, PESQ_SAMPLE_RATE)
    try:
        return float(pesq(PESQ_SAMPLE_RATE, reference, estimate, "wb"))
    except (PesqError, ValueError) as exc:
        # ValueError: the C code's score comes back NaN for degenerate inputs.
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return _undefined(f"PESQ: {type(exc).__name__}: {reason}")


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (Taal et al. 2011), in [0, 1], via pystoi.

    A silent reference, or one too short for STOI's 384 ms analysis segments after its
    silent frames are dropped, gives NaN and an :class:`UndefinedMetricWarning` (pystoi
    itself returns 0 or 1e-5 there, which would pass for a score).

    Shape:
        reference, estimate: ``(samples,)``.
    """
    from pystoi import stoi as pystoi_stoi

    reference = _as_signal(reference, "reference")
    estimate = _as_signal(estimate, "estimate")
    _check_same_length(reference, estimate, "stoi")
    if not np.any(reference) or not np.all(np.isfinite(reference)):
        return _undefined("STOI: reference is silent or not finite")
    if not np.all(np.isfinite(estimate)):
        return _undefined("STOI: estimate is not finite")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi_stoi(reference, estimate, sample_rate, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return _undefined("STOI: too few non-silent frames in the reference")
    return value


def score(
    references: dict[str, np.ndarray], estimates: dict[str, np.ndarray], sample_rate: int
) -> dict[str, dict[str, float]]:
    """Every metric of :data:`METRICS` for each source: ``{source: {metric: value}}``.

    SDR/SIR/SAR treat the sources jointly (each estimate is judged against all references),
    the others source by source. ``estimates`` must have the same keys as ``references``
    and each estimate the same length as its reference.
    """
    if set(references) != set(estimates):
        raise ValueError(
            f"score: references {sorted(references)} and estimates {sorted(estimates)} "
            "name different sources"
        )
    if not references:
        raise ValueError("score: no sources given")
    names = list(references)
    reference_list = [_as_signal(references[n], f"reference {n!r}") for n in names]
    estimate_list = [_as_signal(estimates[n], f"estimate {n!r}") for n in names]
    shapes = {n: (r.size, e.size) for n, r, e in zip(names, reference_list, estimate_list)}
    if len({size for pair in shapes.values() for size in pair}) != 1:
        raise ValueError(f"score: signals differ in length (reference, estimate): {shapes}")
    reference_stack, estimate_stack = np.stack(reference_list), np.stack(estimate_list)
    sdr, sir, sar = bss_eval(reference_stack, estimate_stack)
    results = {}
    for index, name in enumerate(names):
        reference, estimate = reference_stack[index], estimate_stack[index]
        results[name] = {
            "sdr": float(sdr[index]),
            "sir": float(sir[index]),
            "sar": float(sar[index]),
            "si_sdr": si_sdr(reference, estimate),
            "pesq": pesq_wb(reference, estimate, sample_rate),
            "stoi": stoi(reference, estimate, sample_rate),
        }
    return results


def _solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``matrix^-1 rhs`` for a Gram matrix: Cholesky (half LU's work), else LU and least
    squares as mir_eval, for a matrix that is only positive semi-definite in floating point."""
    from scipy.linalg import cho_factor, cho_solve

    try:
        factor = cho_factor(matrix, lower=True, check_finite=False)
        return cho_solve(factor, rhs, check_finite=False)
    except np.linalg.LinAlgError:
        pass
    try:
        return np.linalg.solve(matrix, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(matrix, rhs, rcond=None)[0]


def _solve_toeplitz(column: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve with the symmetric Toeplitz matrix of first column ``column``."""
    from scipy.linalg import solve_toeplitz, toeplitz

    try:
        return solve_toeplitz(column, rhs, check_finite=False)
    except np.linalg.LinAlgError:  # a singular leading minor stops Levinson, not LU
        return _solve(toeplitz(column), rhs)


def _energy(signals: np.ndarray) -> np.ndarray:
    return np.sum(signals**2, axis=-1)


def _db(numerator, denominator):
    """10 log10(num / den), +inf for a zero denominator as in mir_eval."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(denominator == 0, np.inf, numerator / np.where(denominator == 0, 1, denominator))
        return 10 * np.log10(ratio)


def _undefined(reason: str) -> float:
    warnings.warn(f"{reason}; scored as NaN", UndefinedMetricWarning, stacklevel=3)
    return math.nan


def _resample(signal: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return signal
    from scipy.signal import resample_poly

    divisor = math.gcd(int(rate), target_rate)
    return resample_poly(signal, target_rate // divisor, int(rate) // divisor)


def _as_sources(signals, name: str) -> np.ndarray:
    signals = np.asarray(signals, dtype=np.float64)
    if signals.ndim == 1:
        signals = signals[None]
    if signals.ndim != 2:
        raise ValueError(f"{name} must be (sources, samples), got shape {signals.shape}")
    return signals


def _as_signal(signal, name: str) -> np.ndarray:
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"{name} must be a mono signal (samples,), got shape {signal.shape}")
    return signal


def _check_same_length(reference: np.ndarray, estimate: np.ndarray, what: str) -> None:
    if reference.shape != estimate.shape:
        raise ValueError(f"{what}: reference {reference.shape} and estimate {estimate.shape} differ")
