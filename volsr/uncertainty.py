"""Per-voxel uncertainty of a super-resolved volume: features, a calibration, its checks.

The half-width ``U`` of a 90 % interval for ``|output - truth|`` is modelled as

``U = sqrt((a * spread)**2 + f**(2p) ((b * slope)**2 + (c * bend)**2) + (k * noise)**2 + e**2)``

- ``spread``: the standard deviation of the model's outputs over flips of its input (its
  self-ensemble members; 0 for interpolation, which is flip-equivariant);
- ``slope``: the gradient magnitude of the input on its own grid (central differences,
  linearly interpolated onto the output grid): edges are where resampling errs;
- ``bend``: the magnitude of the input's second differences along the upsampled axes (the
  local curvature interpolation cannot recover), interpolated likewise;
- ``f``: the run's largest per-axis factor (resampling errs more, relative to the input's
  local slope and bend, the coarser the input; ``p`` is fitted);
- ``noise``: the noise sigma a scan acquired on the output grid would have (the input's own
  noise, estimated in-plane, divided by how much the slice profile averaged it:
  :func:`noise_attenuation`); "truth" is such a scan, noise included. MRI only: a spectral
  cube's calibration has no noise term (fitted with the feature at 0; measured on the HSI
  training cubes, a per-band noise estimate left held-out coverage and AUSE as they were).

The coefficients ``a, b, c, k, e, p`` belong to a model and a modality (:class:`Calibration`,
fitted by :func:`fit_calibration` on its training volumes or cubes and shipped beside its
weights; on a cube every feature is per band, and ``U`` per pixel and band); every
feature is computed from a tile's input and outputs alone, with a stencil of 2 input voxels,
so tiled maps equal whole-volume maps. :func:`coverage` and :func:`ause` are the checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from volsr.degrade import thick_slice_matrix

__all__ = [
    "FEATURES", "FEATURE_HALO", "LEVEL", "MODALITIES", "Calibration", "input_features", "noise_attenuation",
    "fit_calibration", "fit_scan_transfer", "coverage", "ause", "calibration_report",
]

#: The features, in the order of :attr:`Calibration.coefficients` (``e`` is the constant).
FEATURES = ("spread", "slope", "bend", "noise")

#: Input voxels on each side the features read beyond a tile's interpolation support.
FEATURE_HALO = 2

#: The nominal level of the interval.
LEVEL = 0.9

#: What a calibration is fitted on: MRI volumes, or spectral cubes (an input with a band axis).
MODALITIES = ("mri", "hsi")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The coefficients that turn features into a 90 % half-width, for one model.

    Parameters
    ----------
    model : str
        The registry name the calibration was fitted for.
    coefficients : dict of str to float
        ``a, b, c, k`` for :data:`FEATURES` and ``"constant"`` (``e``), all >= 0, in the
        model's scaled intensity units (a fraction of the input scale).
    factor_power : float
        ``p``: the slope and bend terms grow as ``factor**p``.
    members : int
        Self-ensemble members (flips) whose spread was fitted (1: no spread term).
    level : float
        Nominal coverage (:data:`LEVEL`).
    fitted_on : list of str
        What the fit saw (volumes, factors, noise levels), for the card.
    modality : {"mri", "hsi"}
        The inputs it holds for (:data:`MODALITIES`): a file without the key is ``"mri"``
        (every file written before cubes had calibrations).
    scan_transfer : (2,) tuple of float, optional
        ``(t, q)`` of the per-scan step (:meth:`scan_scale`): the real runs' 90 % quantile of
        ``|error| / U`` is ``t * f**q`` times the scan's self-pairs' (fitted by
        :func:`fit_scan_transfer` on the calibration's own training cases); None: no
        per-scan step (``U`` as the coefficients give it).

    Raises
    ------
    ValueError
        If a coefficient is missing, negative or not finite, ``members`` < 1, the
        modality is unknown, or ``scan_transfer`` is not two finite numbers with ``t > 0``.

    Examples
    --------
    >>> cal = Calibration("cubic", {"spread": 0, "slope": 1, "bend": 0, "noise": 1.645,
    ...                             "constant": 0}, members=1)
    >>> float(cal.half_width(0.0, 0.0, 0.0, 2.0))
    3.29
    """

    model: str
    coefficients: dict[str, float]
    members: int = 1
    factor_power: float = 0.0
    level: float = LEVEL
    fitted_on: tuple[str, ...] = ()
    modality: str = "mri"
    scan_transfer: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        names = (*FEATURES, "constant")
        if set(self.coefficients) != set(names):
            raise ValueError(f"calibration coefficients must be {names}, got {sorted(self.coefficients)}")
        for name in names:
            value = self.coefficients[name]
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"calibration coefficient {name!r} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.members, int) and self.members >= 1):
            raise ValueError(f"calibration members must be an integer >= 1, got {self.members!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"calibration modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.scan_transfer is not None and not (
                len(self.scan_transfer) == 2 and all(math.isfinite(v) for v in self.scan_transfer)
                and self.scan_transfer[0] > 0):  # fmt: skip
            raise ValueError(f"calibration scan_transfer must be two finite numbers (t > 0, q), got {self.scan_transfer!r}")

    def half_width(self, spread, slope, bend, noise, factor: float = 1.0):
        """``U`` from the features (arrays, tensors or floats that broadcast together).

        Parameters
        ----------
        spread, slope, bend : ndarray, tensor or float
            Features on the output grid (scaled units).
        noise : float, ndarray or tensor
            Noise sigma of a scan on the output grid (scaled units).
        factor : float, ndarray or tensor
            The run's largest per-axis factor.

        Returns
        -------
        ndarray, tensor or float
            The half-width, same kind as the inputs (non-negative).

        Examples
        --------
        >>> Calibration("x", dict.fromkeys(FEATURES, 1.0) | {"constant": 0.0}).half_width(3.0, 4.0, 0, 0)
        5.0
        """
        c = self.coefficients
        structure = ((c["slope"] * slope) ** 2 + (c["bend"] * bend) ** 2) * factor ** (2 * self.factor_power)
        total = (c["spread"] * spread) ** 2 + structure + (c["noise"] * noise) ** 2 + c["constant"] ** 2
        return total**0.5

    def scan_scale(self, self_pair_quantile: float, factor: float) -> float:
        """The factor a scan's ``U`` is multiplied by, from its self-pairs (1 without a transfer).

        A scan's in-plane axes give pairs with a known truth (:mod:`volsr.data.self_pairs`); the
        90 % quantile of ``|error| / U`` on them says how this scan's errors compare with the
        training volumes' (a clean scan's fall well inside ``U``, a noisy one's near its edge).
        Self-pairs are smoother than the real slice axis (their other thick axis blurs them too),
        so the real quantile is ``t * f**q`` times theirs (``scan_transfer``). Bounded to
        [1/4, 4]: outside that the self-pairs are not telling about the scan.

        Parameters
        ----------
        self_pair_quantile : float
            The 90 % quantile of ``|error| / U`` over the self-pairs' foreground.
        factor : float
            The run's factor along the upsampled axis.

        Returns
        -------
        float
            In [0.25, 4]; 1.0 if ``scan_transfer`` is None or the quantile is not finite and > 0.

        Examples
        --------
        >>> cal = Calibration("m", dict.fromkeys((*FEATURES, "constant"), 0.0), scan_transfer=(0.5, 1.0))
        >>> cal.scan_scale(0.6, 4.0), cal.scan_scale(0.001, 4.0), cal.scan_scale(float("nan"), 4.0)
        (1.2, 0.25, 1.0)
        """
        if self.scan_transfer is None or not (math.isfinite(self_pair_quantile) and self_pair_quantile > 0):
            return 1.0
        t, q = self.scan_transfer
        return float(min(4.0, max(0.25, t * factor**q * self_pair_quantile)))

    def to_json(self) -> str:
        """The calibration as JSON text (what :meth:`load` reads)."""
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration file (JSON only: no code runs).

        Parameters
        ----------
        path : str or Path
            A file written from :meth:`to_json`.

        Returns
        -------
        Calibration

        Raises
        ------
        ValueError
            If the file is not a calibration.
        OSError
            If it cannot be read.
        """
        text = Path(path).read_text(encoding="utf-8")
        try:
            fields = json.loads(text)
            return cls(model=str(fields["model"]), coefficients={k: float(v) for k, v in fields["coefficients"].items()},
                       members=int(fields["members"]), level=float(fields["level"]),
                       factor_power=float(fields.get("factor_power", 0.0)),
                       fitted_on=tuple(fields.get("fitted_on", ())),
                       modality=str(fields.get("modality", "mri")),
                       scan_transfer=None if fields.get("scan_transfer") is None
                       else tuple(float(v) for v in fields["scan_transfer"]))  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path} is not a volsr calibration: {error}") from None


def input_features(x: torch.Tensor, factors: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The slope and bend of an input tile, on its own grid.

    Parameters
    ----------
    x : (B, C, *spatial) floating torch.Tensor
        Input tile (scaled units), ``D`` spatial axes.
    factors : (D,) sequence of float
        Per-axis factor of the run: ``bend`` sums the axes with a factor above 1.

    Returns
    -------
    slope, bend : (B, C, *spatial) torch.Tensor
        ``sqrt(sum_d ((x[i+1] - x[i-1]) / 2)**2)`` and ``sqrt(sum_{d: f_d > 1} (x[i+1] - 2 x[i]
        + x[i-1])**2)``; edge voxels repeat their neighbour (the engine's halo keeps them
        out of the output).

    Raises
    ------
    ValueError
        If ``factors`` does not name every spatial axis.

    Examples
    --------
    >>> x = torch.tensor([[[0.0, 1.0, 4.0, 9.0, 16.0]]])
    >>> slope, bend = input_features(x, (2.0,))
    >>> slope[0, 0].tolist(), bend[0, 0].tolist()
    ([2.0, 2.0, 4.0, 6.0, 6.0], [2.0, 2.0, 2.0, 2.0, 2.0])
    """
    d = x.ndim - 2
    if len(factors) != d:
        raise ValueError(f"factors must give one value per spatial axis ({d}), got {tuple(factors)}")
    slope = torch.zeros_like(x)
    bend = torch.zeros_like(x)
    for axis in range(d):
        dim = 2 + axis
        n = x.shape[dim]
        if n < 3:
            continue
        ahead, behind, here = x.narrow(dim, 2, n - 2), x.narrow(dim, 0, n - 2), x.narrow(dim, 1, n - 2)
        first = _pad_edges((ahead - behind) / 2, dim)
        slope += first**2
        if factors[axis] > 1:
            bend += _pad_edges(ahead - 2 * here + behind, dim) ** 2
    return slope.sqrt_(), bend.sqrt_()


def _pad_edges(inner: torch.Tensor, dim: int) -> torch.Tensor:
    """``inner`` (two shorter along ``dim``) with its first and last slices repeated."""
    return torch.cat([inner.narrow(dim, 0, 1), inner, inner.narrow(dim, inner.shape[dim] - 1, 1)], dim)


def noise_attenuation(thickness: float, factor: float, profile: str = "gaussian") -> float:
    """How much a slice profile lowers white noise: ``sqrt(sum w**2)`` of its normalised weights.

    An LR voxel that averages HR voxels with weights ``w`` (summing to 1) has noise sigma
    ``sqrt(sum w**2)`` times theirs: the RMS over the rows of
    :func:`volsr.degrade.thick_slice_matrix` (every phase of the slice centres).

    Parameters
    ----------
    thickness : float
        Slice thickness in output voxels (> 0): FWHM of a Gaussian, width of a box.
    factor : float
        Slice spacing in output voxels (>= 1).
    profile : {"gaussian", "box"}
        Slice profile (:func:`volsr.degrade.thick_slice`).

    Returns
    -------
    float
        In (0, 1]; 1 for a factor of 1 and thickness <= 1.

    Raises
    ------
    ValueError
        If ``thickness`` is not positive or ``profile`` is unknown (from
        :func:`volsr.degrade.thick_slice_matrix`).

    Examples
    --------
    >>> round(noise_attenuation(4.0, 4.0), 3)  # Gaussian FWHM 4: about 1 / sqrt(2 sqrt(pi) sigma) = 0.407
    0.408
    >>> round(noise_attenuation(4.0, 4.0, "box"), 3)  # a mean of 4: 1 / 2
    0.5
    """
    # Rows far from the borders (folded taps there would count a voxel twice), many phases.
    matrix = thick_slice_matrix(int(64 * max(factor, 1.0)) + 32, factor, thickness=thickness, profile=profile)
    inner = matrix[8:-8] if matrix.shape[0] > 16 else matrix
    return math.sqrt(float(np.mean(np.asarray(inner.multiply(inner).sum(axis=1)))))


def fit_calibration(
    model: str,
    features: Sequence[np.ndarray],
    errors: Sequence[np.ndarray],
    *,
    members: int,
    factors: Sequence[float] | None = None,
    level: float = LEVEL,
    fitted_on: Sequence[str] = (),
    max_voxels: int = 100_000,
    modality: str = "mri",
) -> Calibration:
    """Fit the coefficients by quantile regression, then make the coverage exact on the data.

    Minimises the pinball loss at ``level`` of ``|error|`` against ``U`` (each volume
    weighted alike; no constant term, so that ``U`` scales with the intensities as the
    features and errors do, whatever the input's units), then scales every coefficient by the ``level`` quantile of
    ``|error| / U`` (a split-conformal step on the same voxels) so that the fitted
    coverage is ``level``.

    Parameters
    ----------
    model : str
        Registry name.
    features : sequence of (4, N_v) ndarray
        Per volume: spread, slope, bend, noise per foreground voxel, or per pixel and band
        of a cube (scaled units).
    errors : sequence of (N_v,) ndarray
        Per volume: ``|output - truth|`` on those voxels.
    members : int
        Ensemble members the spread came from.
    factors : sequence of float, optional
        Per volume: the run's largest factor (fits ``factor_power``; default: all 1, no power).
    level : float
        Nominal coverage.
    fitted_on : sequence of str
        Description of the data, stored.
    max_voxels : int
        Voxels drawn per volume (without replacement, a fixed seed) to keep the fit fast.
    modality : {"mri", "hsi"}
        What the volumes are (stored: the engine picks a calibration by its input's modality).

    Returns
    -------
    Calibration

    Raises
    ------
    ValueError
        If no voxels are given, shapes disagree or the modality is unknown.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noise = np.full(20000, 0.1)
    >>> f = np.stack([np.zeros(20000), np.zeros(20000), np.zeros(20000), noise])
    >>> cal = fit_calibration("x", [f], [np.abs(rng.normal(0, 0.1, 20000))], members=1)
    >>> round(cal.coefficients["noise"], 1)  # the 90 % point of |N(0, 1)|: 1.645
    1.6
    """
    from scipy.optimize import minimize

    if not features or len(features) != len(errors):
        raise ValueError("give one feature array and one error array per volume (at least one)")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    weights, stacked, target, per_voxel = [], [], [], []
    rng = np.random.default_rng(0)
    factors = [1.0] * len(errors) if factors is None else [float(x) for x in factors]
    for f, e, run_factor in zip(features, errors, factors, strict=True):
        f, e = np.asarray(f), np.asarray(e)
        if f.shape != (len(FEATURES), e.size):
            raise ValueError(f"features must be ({len(FEATURES)}, N) for N errors, got {f.shape} and {e.shape}")
        if e.size > max_voxels:
            keep = rng.choice(e.size, max_voxels, replace=False)
            f, e = f[:, keep], e[keep]
        f, e = f.astype(np.float64), e.astype(np.float64)
        stacked.append(f)
        target.append(e)
        per_voxel.append(np.full(e.size, run_factor))
        weights.append(np.full(e.size, 1.0 / max(e.size, 1)))
    f, e, w = np.concatenate(stacked, 1), np.concatenate(target), np.concatenate(weights)
    log_factor = np.log(np.concatenate(per_voxel))
    fit_power = bool(np.ptp(log_factor) > 0)
    if e.size == 0:
        raise ValueError("no voxels to fit a calibration on")
    scale = np.maximum(np.sqrt(np.average(f**2, axis=1, weights=w)), 1e-12)
    typical = float(np.sqrt(np.average(e**2, weights=w)))

    def widths(params: np.ndarray) -> np.ndarray:
        coef = np.exp(params[:4])
        terms = (coef[:, None] * f / scale[:, None]) ** 2
        power = params[4] if fit_power else 0.0
        terms[1:3] *= np.exp(2 * power * log_factor)
        return np.sqrt(np.sum(terms, 0))

    def pinball(log_coef: np.ndarray) -> float:
        r = e - widths(log_coef)
        return float(np.sum(w * np.maximum(level * r, (level - 1) * r)))

    start = np.append(np.log(np.full(4, typical)), 0.0)
    best = minimize(pinball, start, method="Nelder-Mead", options={"maxiter": 6000, "xatol": 1e-4, "fatol": 1e-10})
    coef = np.exp(best.x[:4])
    u = widths(best.x)
    ratio = e / np.maximum(u, 1e-12)
    order = np.argsort(ratio)
    cumulative = np.cumsum(w[order]) / w.sum()
    factor = float(ratio[order][np.searchsorted(cumulative, level)])
    coefficients = {name: float(factor * coef[n] / scale[n]) if scale[n] > 1e-12 else 0.0
                    for n, name in enumerate(FEATURES)}  # a feature that is always 0 gets no coefficient
    coefficients["constant"] = 0.0  # fitted without: every term then scales with the intensities
    return Calibration(model, coefficients, members=members, level=level, fitted_on=tuple(fitted_on),
                       factor_power=float(best.x[4]) if fit_power else 0.0, modality=modality)  # fmt: skip


def fit_scan_transfer(factors: Sequence[float], real_quantiles: Sequence[float],
                      self_pair_quantiles: Sequence[float]) -> tuple[float, float]:  # fmt: skip
    """Fit ``(t, q)`` of :meth:`Calibration.scan_scale`: ``real <= t * f**q * self`` on every case.

    ``q`` by least squares of ``log(real / self)`` on ``log f``; ``t`` then the smallest value
    with which no case's real quantile exceeds its prediction (the conformal choice: after the
    per-scan step every training case is covered at the nominal level or more).

    Parameters
    ----------
    factors : (N,) sequence of float
        Each training case's factor.
    real_quantiles, self_pair_quantiles : (N,) sequence of float
        Each case's 90 % quantile of ``|error| / U`` on its real run and on its self-pairs.

    Returns
    -------
    (2,) tuple of float
        ``t`` and ``q`` (``q = 0`` where every case has one factor).

    Raises
    ------
    ValueError
        If fewer than 2 cases are given, lengths differ, or a quantile is not > 0.

    Examples
    --------
    >>> t, q = fit_scan_transfer([2, 4, 4], [0.5, 1.0, 2.0], [0.5, 0.5, 1.0])
    >>> round(t, 6), round(q, 6)
    (0.5, 1.0)
    """
    f, real, own = (np.asarray(v, np.float64) for v in (factors, real_quantiles, self_pair_quantiles))
    if not (f.shape == real.shape == own.shape and f.size >= 2):
        raise ValueError("give a factor, a real and a self-pair quantile for each of at least 2 cases")
    if not (np.all(real > 0) and np.all(own > 0) and np.all(f > 0)):
        raise ValueError("factors and quantiles must be > 0")
    y, x = np.log(real / own), np.log(f)
    q = float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else 0.0
    return float(np.exp(np.max(y - q * x))), q


def coverage(half_width: np.ndarray, error: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of (masked) voxels with ``|error| <= half_width``.

    Parameters
    ----------
    half_width, error : ndarray
        Same shape; ``error`` is ``output - truth`` (its sign is ignored).
    mask : bool ndarray, optional
        Voxels to count (e.g. the foreground).

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    ValueError
        If shapes differ or no voxel is counted.

    Examples
    --------
    >>> coverage(np.array([1.0, 1.0, 0.5, 2.0]), np.array([0.5, -1.0, 0.6, 3.0]))
    0.5
    """
    u, e = _masked(half_width, error, mask)
    return float(np.mean(np.abs(e) <= u))


def ause(half_width: np.ndarray, error: np.ndarray, mask: np.ndarray | None = None, *, steps: int = 100) -> float:
    """Area under the sparsification error, relative to a random order's (0: oracle, 1: random).

    The sparsification curve is the mean ``|error|`` of the voxels left after removing the
    share ``p`` with the highest ``half_width`` (``p = 0, 1/steps, ..., 1 - 1/steps``); the
    oracle removes by ``|error|`` itself; a random order leaves the mean. Returned:
    ``sum(curve - oracle) / sum(mean - oracle)``.

    Parameters
    ----------
    half_width, error : ndarray
        Same shape.
    mask : bool ndarray, optional
        Voxels to count.
    steps : int
        Removal shares evaluated.

    Returns
    -------
    float
        About 0 for a perfect ranking, about 1 for an uninformative one.

    Raises
    ------
    ValueError
        If shapes differ, no voxel is counted, or every error is equal.

    Examples
    --------
    >>> err = np.arange(1.0, 101.0)
    >>> ause(err, err), round(ause(-err, err), 2)
    (0.0, 2.0)
    """
    u, e = _masked(half_width, error, mask)
    e = np.abs(e).astype(np.float64)
    n = e.size
    kept = n - (np.arange(steps) * n) // steps

    def curve(order: np.ndarray) -> np.ndarray:
        tail_sums = np.cumsum(e[order][::-1])[::-1]  # sum of the voxels from rank r on
        return tail_sums[n - kept] / kept

    oracle = curve(np.argsort(-e, kind="stable"))
    by_u = curve(np.argsort(-u.astype(np.float64), kind="stable"))
    random_area = float(np.sum(e.mean() - oracle))
    if random_area <= 0:
        raise ValueError("every error is equal: sparsification is undefined")
    return float(np.sum(by_u - oracle) / random_area)


def _masked(half_width: np.ndarray, error: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    u, e = np.asarray(half_width), np.asarray(error)
    if u.shape != e.shape or (mask is not None and np.shape(mask) != u.shape):
        raise ValueError(f"half-width, error and mask must share one shape, got {u.shape}, {e.shape}"
                         f"{'' if mask is None else ', ' + str(np.shape(mask))}")  # fmt: skip
    if mask is not None:
        u, e = u[np.asarray(mask, bool)], e[np.asarray(mask, bool)]
    if u.size == 0:
        raise ValueError("no voxel to evaluate (empty mask?)")
    return u.ravel(), e.ravel()


def calibration_report(half_width: np.ndarray, error: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Coverage, AUSE and the Spearman correlation of ``half_width`` with ``|error|``.

    Parameters
    ----------
    half_width, error : ndarray
        Same shape (``error = output - truth``).
    mask : bool ndarray, optional
        Voxels to count.

    Returns
    -------
    dict
        ``coverage_90``, ``ause``, ``spearman_uncertainty_error``.

    Raises
    ------
    ValueError
        As :func:`ause`.

    Examples
    --------
    >>> err = np.arange(1.0, 101.0)
    >>> round(calibration_report(err, err)["spearman_uncertainty_error"], 6)
    1.0
    """
    from scipy.stats import spearmanr

    u, e = _masked(half_width, error, mask)
    return {"coverage_90": coverage(u, e), "ause": ause(u, e),
            "spearman_uncertainty_error": float(spearmanr(u, np.abs(e)).statistic)}  # fmt: skip
