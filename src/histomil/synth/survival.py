"""Survival cohort of the synthetic generator: cases of 1-3 slides, hazard from lesion content.

Each case has a lesion share (log-normal) and a grade (standard normal; it scales a second,
"aggressiveness" direction in the lesion features). Its log-hazard is
``hazard_share * z(log share) + hazard_grade * grade``; event times are exponential (median
``median_time`` at average risk); censoring times are exponential with a rate solved so that
about ``censoring`` of the cases are censored, plus an administrative end at ``max_time``.
"""

from __future__ import annotations

import zlib

import numpy as np

from histomil.synth.bag_config import BagSynthConfig
from histomil.synth.bag_slide import SlideSpec

_OUTCOME_KEY = 0x5EED_0002


def _case_rng(seed: int, case_id: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(case_id.encode()), 7]))


def survival_cohort(cfg: BagSynthConfig, seed: int) -> tuple[list[SlideSpec], dict[str, dict]]:
    """Slide specs and per-case outcomes ``{case_id: {time, event, split, risk, ...}}``."""
    n_cases = cfg.n_cases
    case_ids = [f"case_{i:04d}" for i in range(n_cases)]
    order = np.random.default_rng(np.random.SeedSequence([seed, _OUTCOME_KEY])).permutation(n_cases)
    fr = np.asarray(cfg.case_split_fractions, float)
    bounds = np.round(np.cumsum(fr / fr.sum()) * n_cases).astype(int)
    split_of = {}
    for rank, i in enumerate(order):
        split_of[case_ids[i]] = (
            "train" if rank < bounds[0] else "val" if rank < bounds[1] else "test"
        )

    specs: list[SlideSpec] = []
    cases: dict[str, dict] = {}
    log_med = np.log(cfg.survival_lesion_share_median)
    for cid in case_ids:
        rng = _case_rng(seed, cid)
        z = rng.standard_normal()
        share = float(np.exp(log_med + cfg.survival_lesion_share_sigma * z))
        grade = float(rng.standard_normal())
        lo, hi = cfg.slides_per_case
        n_slides = int(rng.integers(lo, hi, endpoint=True))
        risk = cfg.hazard_share * z + cfg.hazard_grade * grade
        cases[cid] = dict(
            risk=float(risk),
            lesion_share=share,
            grade=grade,
            n_slides=n_slides,
            split=split_of[cid],
            u_event=float(rng.random()),
            u_censor=float(rng.random()),
        )
        for s in range(n_slides):
            slide_share = float(share * np.exp(0.3 * rng.standard_normal()))
            specs.append(SlideSpec(f"{cid}_s{s}", 1, split_of[cid], True, cid, slide_share, grade))
    _assign_times(cfg, cases)
    return specs, cases


def _assign_times(cfg: BagSynthConfig, cases: dict[str, dict]) -> None:
    """Exponential event and censoring times from each case's stored uniforms (in place)."""
    rates = np.log(2) / cfg.median_time * np.exp([c["risk"] for c in cases.values()])
    c_rate = _censoring_rate(rates, cfg.censoring, cfg.max_time)
    for (_cid, case), rate in zip(cases.items(), rates, strict=True):
        t_event = -np.log1p(-case["u_event"]) / rate
        t_censor = -np.log1p(-case["u_censor"]) / c_rate if c_rate > 0 else np.inf
        t_end = min(t_censor, cfg.max_time)
        case["time"] = float(round(min(t_event, t_end), 3))
        case["event"] = int(t_event <= t_end)
        del case["u_event"], case["u_censor"]


def _censoring_rate(rates: np.ndarray, target: float, max_time: float) -> float:
    """Exponential censoring rate giving an expected censored share ``target``."""

    def censored(c: float) -> float:
        # P(T > min(C, max_time)) for T ~ Exp(r), C ~ Exp(c)
        tot = rates + c
        p_c_first = np.where(tot > 0, c / tot * (1 - np.exp(-tot * max_time)), 0.0)
        return float(np.mean(p_c_first + np.exp(-tot * max_time)))

    if censored(0.0) >= target:
        return 0.0
    lo, hi = 0.0, 100.0 * float(rates.max()) + 1.0
    for _ in range(100):  # bisection: censored() increases with the censoring rate
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if censored(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)
