"""``l2p calibrate``: capture -> (search a schedule) -> fit -> (refit on own trajectories) -> save.

Torch-free. Trajectories are cached (atomically) under ``BUNDLE/predictors/.cache`` so that an
interrupted calibration resumes without recomputing them. Which runs fit and which score:
:mod:`.split`; the schedule search: :mod:`.search`.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from ..atomic import save_npz, write_bytes
from ..metrics import psnr_each
from ..bundle import bundle_hash, read_manifest
from ..errors import ArtifactError, BusyError, InputError
from ..locking import folder_lock_path, hold_lock
from ..predictor.artifact import Predictor, load_predictor, save_predictor
from ..predictor.presets import preset
from ..predictor.schedule import Schedule, interval_schedule
from ..predictor.table import CoefficientTable
from ..progress import BarFactory, bar_of, no_bar
from ..safe_io import load_npz, make_dirs
from ..sampling.methods import expectation, feature_spec, forecaster_from_table
from ..sampling.pipeline import Sampler
from ..sampling.guidance import split_conditioning
from ..spec import TensorSpec
from .capture import Trajectories, capture, full_targets
from .closed_loop import null_directions, refine
from .config import CalibrationConfig
from .fidelity import fidelity_table, plot_fidelity, projection_fidelity
from .fit import FitConfig, fit_table
from .search import noise_levels, search_schedule
from .starts import PRESET_K, PRESET_STARTS, score_starts, start_schedules
from .split import Part, capped, holdout_split, search_folds, select_rows


#: at most this many cached runs (rows x seeds) score each schedule the search tries, score the fit
#: variants, refit and closed-loop rounds, and enter the closed loop's Jacobian at 10 computed steps
#: (:func:`run_cap`): what a score needs on a data set of near-identical runs, and what keeps
#: ``calibrate`` 10/50 on the tiny model near two minutes whatever the size of the calibration set
#: (rows spread over it: :func:`.split.capped`)
SEARCH_RUNS = 16
SCORE_RUNS = 32
JACOBIAN_RUNS = 16


def run_cap(runs: int, full_steps: int) -> int:
    """The cap ``runs`` (set for 10 computed steps) at ``full_steps``: a cached run costs about its
    computed steps, so fewer of them afford more runs, up to 64. At high acceleration each run's
    score scatters more (a few forecast errors grow through many steps), and more runs keep the
    search from choosing a schedule by the luck of a few."""
    return min(64, max(runs, runs * 10 // max(full_steps, 1)))


#: the best fixed-formula start on another schedule than the best's is refined too if it trails by at most this (dB)
RUNNER_UP_GAP_DB = 3.0


def _exact_words(exact: int) -> str:
    return {-1: "free weights", 0: "weights sum to 1"}.get(exact, f"exact up to degree {exact}")


class Calibrator:
    """One calibration run over an opened bundle's sampler and a conditioning set.

    ``sampler`` is used as it is (its engines, threads and guidance): the bundle is opened and
    verified once, by whoever made the sampler, however many calibrations run on it.
    ``progress`` makes the bars of the long parts (capture, schedule search, fit variants,
    refit capture, closed-loop rounds); the default shows none. ``cfg.rows`` selects the
    conditioning rows; ``cfg.holdout`` keeps a part of them out of every fit (:mod:`.split`).
    """

    def __init__(self, sampler: Sampler, cond: dict[str, np.ndarray], cfg: CalibrationConfig,
                 log: Callable[[str], None] = print, progress: BarFactory = no_bar) -> None:
        self.sampler = sampler
        self.progress = progress
        self.bundle = sampler.bundle
        self.cond = select_rows(self.sampler.check_conditioning(cond, "calibration conditioning"), cfg.rows)
        self.cfg = cfg
        # classifier-free guidance: the sampler's; calibration captures the guided trajectories
        self.cfg_scale = sampler.run_cfg_scale
        self.cfg_forecast = sampler.cfg_forecast if self.cfg_scale > 1 else "guided"
        split_conditioning(sampler.rt, self.cond, self.cfg_scale > 1)  # missing negative arrays: refused now
        self.log = log
        self.search_variant = cfg.search_variants()[0]  # what scores each schedule of the search
        self.fit_cfg = self.search_variant  # the chosen variant, once chosen
        self.num_rows = len(next(iter(self.cond.values())))
        self.fit_part, self.held_part = holdout_split(self.num_rows, cfg.seeds, cfg.holdout)
        self._ref_images: dict[int, np.ndarray] = {}  # trajectory number -> decoded full-compute image
        h = hashlib.sha256(self.bundle.hash.encode())
        for k in sorted(self.cond):
            h.update(k.encode() + self.cond[k].tobytes())
        self.cond_hash = h.hexdigest()

    # trajectories ---------------------------------------------------------------------------
    @property
    def run_seeds(self) -> list[int]:
        """The ``--seed`` of each calibration seed's batch, ``k * rows`` for seed number ``k``: image ``r``
        starts from seed ``seed + r``, so no two (row, seed) pairs share a noise."""
        return [k * self.num_rows for k in range(self.cfg.seeds)]

    def full_trajectories(self) -> Trajectories:
        guided = f"-cfg{self.cfg_scale!r}-{self.cfg_forecast}" if self.cfg_scale > 1 else ""
        key = hashlib.sha256(f"{self.cond_hash}-{self.cfg.steps}-{self.cfg.seeds}{guided}".encode()).hexdigest()[:24]
        rel = f"predictors/.cache/traj-{key}.npz"
        path = self.bundle.path(rel, "trajectory cache")  # refuses links on the way
        rows = self.num_rows
        if path.is_file():
            try:
                traj = Trajectories.from_arrays(load_npz(path, nofollow=True))
                if traj.fits(self.sampler, rows, self.run_seeds, self.cfg.steps):
                    self.log(f"reusing {traj.count} cached full-compute trajectories ({path.name})")
                    return traj
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass
            path.unlink()  # unreadable, stale or foreign cache: recompute
        self.log(f"capturing {rows} conditions x {self.cfg.seeds} seeds, {self.cfg.steps} full steps each ...")
        with bar_of(self.progress, self.cfg.seeds * self.cfg.steps, "capture (full compute)", "step") as bar:
            traj = capture(self.sampler, self.cond, self.run_seeds, self.cfg.steps,
                           progress=lambda n: self.log(f"  seed {n + 1}/{self.cfg.seeds} done"),
                           on_step=lambda i: bar.update())
        make_dirs(self.bundle.root, posixpath.dirname(rel), "trajectory cache")
        save_npz(path, **traj.arrays())
        return traj

    # fit / evaluate -------------------------------------------------------------------------
    def fit(self, traj: Trajectories, schedule: tuple[int, ...],
            fit_cfg: FitConfig | None = None) -> tuple[CoefficientTable, dict[str, Any]]:
        f = fit_cfg or self.fit_cfg
        latents = traj.feature_latents(self.cfg.tap) if f.uses_latents else None
        return fit_table(traj.features[self.cfg.tap], latents, schedule, f)

    @property
    def metric(self) -> str:
        """What candidates are scored by: decoded-image PSNR where the bundle has a VAE decoder, else latent PSNR."""
        return "image" if self.bundle.has("vae_decoder") else "latent"

    def _outputs(self, table: CoefficientTable, ref: Trajectories, part: Part) -> tuple[np.ndarray, np.ndarray]:
        """The cached sampler's outputs on ``part`` of the calibration set (each run from the noise its
        full-compute run started from) and full compute's: decoded float images ``(n, H, W, 3)`` in
        [0, 1] where the bundle has an image decoder, else final latents."""
        fc = forecaster_from_table(self.bundle, table, self.cfg.tap, "candidate predictor")
        rows = np.asarray(part.rows, dtype=np.int64)
        cond = {k: v[rows] for k, v in self.cond.items()}
        finals = np.concatenate([
            self.sampler.sample(cond, k, self.cfg.steps, forecaster=fc, decode=False,
                                initial=ref.latents[Part(part.rows, (k,)).index(self.num_rows), 0]).final
            for k in part.seeds])
        idx = part.index(self.num_rows)
        if self.metric == "latent":
            return finals, ref.finals[idx]
        missing = [int(t) for t in idx if int(t) not in self._ref_images]
        if missing:
            decoded = self.sampler.decode_float(ref.finals[missing])
            assert decoded is not None
            self._ref_images.update(zip(missing, decoded))
        got = self.sampler.decode_float(finals)
        assert got is not None
        return got, np.stack([self._ref_images[int(t)] for t in idx])

    def evaluate(self, table: CoefficientTable, ref: Trajectories, part: Part) -> float:
        """Mean PSNR (dB) of the cached sampler vs. full compute on ``part`` of the calibration set.

        On the decoded images (float, before 8-bit rounding) where the bundle has an image decoder:
        what users look at, and a linear fit that is best on the latents is not always best on
        the image. Otherwise on the final latents.
        """
        return self.measure(table, ref, part)[1]

    def run_scores(self, table: CoefficientTable, ref: Trajectories, part: Part) -> np.ndarray:
        """float64 ``(runs,)``: :meth:`evaluate`'s PSNR of each run of ``part``, in its order."""
        return self._psnrs(*self._outputs(table, ref, part))

    def measure(self, table: CoefficientTable, ref: Trajectories, part: Part) -> tuple[np.ndarray, float]:
        """One cached run: what :meth:`evaluate` scores as a flat float64 residual (cached minus
        full compute), and the score."""
        got, want = self._outputs(table, ref, part)
        return (got.astype(np.float64) - want).reshape(-1), float(np.mean(self._psnrs(got, want)))

    def _psnrs(self, got: np.ndarray, want: np.ndarray) -> np.ndarray:
        """Per-run PSNR by :attr:`metric`: images against the peak 1, latents against their range."""
        return psnr_each(got, want, peak=1.0) if self.metric == "image" else psnr_each(got, want)

    def choose_schedule(self, traj: Trajectories) -> tuple[tuple[int, ...], dict[str, Any]]:
        """The computed steps: given (``--schedule 0,1,...``), the interval schedule, or searched
        (:func:`~.search.search_schedule`: for each candidate, fit the weights on a fold's fit part
        and score the cached sampler on its score part, :func:`~.split.search_folds`; the fixed
        formulas' tables are scored on the same runs)."""
        cfg = self.cfg
        if cfg.fixed_schedule is not None:
            self.log(f"schedule: given, {list(cfg.fixed_schedule)}")
            return cfg.fixed_schedule, {}
        if cfg.schedule == "interval":
            return interval_schedule(cfg.steps, cfg.full_steps, cfg.warmup), {}
        if cfg.full_steps == 1:  # one computed step: step 0, and nothing to search
            self.log(f"schedule: with --full-steps {cfg.full_steps} only step 0 runs the transformer")
            return interval_schedule(cfg.steps, cfg.full_steps, 1), {}
        # the second fold only spends the runs that fewer computed steps afford: 10/50's cost stays as it was
        cap = run_cap(SEARCH_RUNS, cfg.full_steps)
        folds = search_folds(self.fit_part, self.held_part, cap, second=cap > SEARCH_RUNS)
        fit_trajs = [traj.take(fit.index(self.num_rows)) for fit, _ in folds]
        variant = self.search_variant
        self.log("schedule search: " + "; ".join(
            f"weights fitted on {fit.describe()}, scored closed loop on {score.describe()}"
            + (" (the same runs: one seed, no --holdout)" if fit == score else "") for fit, score in folds))

        def fitted(sched: Schedule) -> np.ndarray:  # each fold's runs scored by weights fitted on its other runs
            return np.concatenate([self.run_scores(self.fit(ft, sched, variant)[0], traj, score)
                                   for ft, (_, score) in zip(fit_trajs, folds)])

        def formula(name: str) -> Callable[[Schedule], np.ndarray]:
            return lambda sched: np.concatenate([self.run_scores(preset(name, sched, cfg.steps, K=PRESET_K), traj,
                                                                 score) for _, score in folds])

        t0 = time.perf_counter()
        best, score, record = search_schedule(
            cfg.steps, cfg.full_steps, fitted, levels=noise_levels(self.sampler, cfg.steps), progress=self.progress,
            log=self.log, kind="least squares", others={name: formula(name) for name in PRESET_STARTS})
        record.update({"seconds": time.perf_counter() - t0, "folds": [{"fit": f.to_json(), "score": s.to_json()}
                                                                      for f, s in folds], "metric": self.metric})
        self.log(f"schedule search: {list(best)} -> {score:.2f} dB ({self.metric} PSNR, {record['kind']}, on "
                 f"{sum(s.size for _, s in folds)} runs), {record['evaluations']} evaluations in "
                 f"{record['seconds']:.0f} s")
        return best, record

    def run(self) -> Predictor:
        """Calibrate and save ``BUNDLE/predictors/NAME``, holding the bundle (shared: no export may
        replace it meanwhile) and the name (exclusive: one calibration per name) locked."""
        root, name = self.bundle.root, self.cfg.name
        self.bundle.predictors_dir.mkdir(exist_ok=True)
        with hold_lock(folder_lock_path(root), f"bundle {root}", shared=True), \
                hold_lock(self.bundle.predictors_dir / f".{name}.lock", f"predictor '{name}' of bundle {root}"):
            if bundle_hash(read_manifest(root)) != self.bundle.hash:
                raise BusyError(f"bundle {root} was replaced while calibration started (by l2p export?); "
                                "run the calibration again")
            return self._run()

    def _run(self) -> Predictor:
        cfg = self.cfg
        folder = self.bundle.predictor_dir(cfg.name)
        guided = {"cfg_scale": self.cfg_scale, "cfg_forecast": self.cfg_forecast} if self.cfg_scale > 1 else {}
        settings = json.loads(json.dumps({**asdict(cfg), "conditioning_sha256": self.cond_hash, **guided}))
        try:
            old = load_predictor(folder, expect=expectation(self.bundle, cfg.steps))
            if old.created_by == settings:
                self.log(f"predictor '{cfg.name}' is up to date; nothing to do")
                return old
        except (ArtifactError, InputError, FileNotFoundError):
            pass
        traj = self.full_trajectories()
        if cfg.tap not in traj.features:
            raise InputError(f"the transformer graph has no '{cfg.tap}' output; re-export the bundle")
        schedule, search = self.choose_schedule(traj)
        fit_part, held = self.fit_part, self.held_part
        fit_traj = traj.take(fit_part.index(self.num_rows))  # every fit below uses these runs only
        cap = run_cap(SCORE_RUNS, cfg.full_steps)  # the calibration score: two seeds (more at high acceleration)
        eval_part = capped(Part(fit_part.rows, fit_part.seeds[:2 * cap // SCORE_RUNS]), cap)
        pool: list[tuple[float, CoefficientTable, dict[str, Any], FitConfig]] = []  # every candidate
        variants = []
        # every fit variant on the chosen schedule, then the search's fit on its next best schedules (the
        # leaders), scored again on these (more) runs: at high acceleration a search score on few runs is
        # luck as much as schedule (tiny-sd3 at 5/50)
        leaders = [tuple(sch) for sch in search.get("leaders", [])]
        jobs = [(schedule, c, False) for c in cfg.variants()] + [(sch, self.search_variant, True) for sch in leaders]
        with bar_of(self.progress, len(cfg.variants()), "fit variants", "fit") as bar:  # the leaders: a few more
            for sched, fit_cfg, again in jobs:
                table, stats = self.fit(fit_traj, sched, fit_cfg)
                score = self.evaluate(table, traj, eval_part)
                variants.append({"K": fit_cfg.K, "exact": fit_cfg.exact, "latents": fit_cfg.uses_latents,
                                 "prior": fit_cfg.prior, "ridge": fit_cfg.ridge, "psnr_db": score,
                                 **({"schedule": list(sched)} if again else {}), "fit_seconds": stats["fit_seconds"]})
                pool.append((score, table, stats, fit_cfg))
                if not again:
                    bar.update()
        fitted = max(pool[:len(jobs) - len(leaders)], key=lambda c: c[0])  # the best on the chosen schedule
        best = max(pool, key=lambda c: c[0])
        # then the fixed formulas (:mod:`.starts`) on these schedules: the best of all is refined below
        starts = score_starts(start_schedules(schedule, cfg.steps, cfg.full_steps, cfg.schedule == "search", leaders),
                              cfg.steps, lambda t: self.evaluate(t, traj, eval_part))
        n_starts = len(starts)
        for pscore, start, record in starts:
            variants.append(record)
            pool.append((pscore, start, {**fitted[2], "start": record["preset"]}, FitConfig(PRESET_K, False, exact=0)))
            if pscore > best[0]:
                best = pool[-1]
        # the best fixed-formula start on another schedule (the runner-up) is refined too: the closed loop adds
        # up to 2 dB to a formula's table (tiny-sd3, 7/50 and 5/50), a few tenths to a least-squares fit; unless
        # it trails by more than one round has ever added
        contender = max((c for c in pool if c[1].computed != best[1].computed and "start" in c[2]),
                        key=lambda c: c[0], default=None)
        if contender is not None and contender[0] < best[0] - RUNNER_UP_GAP_DB:
            contender = None
        if best[1].computed != schedule:
            what = f"the {best[2]['start']} formula" if "start" in best[2] else "the least-squares fit"
            self.log(f"schedule: {what} scores best on {list(best[1].computed)}, not on the searched "
                     f"{list(schedule)}: calibrating on it")
            schedule = best[1].computed
        score, table, stats, self.fit_cfg = best
        f = self.fit_cfg
        words = (f"the {stats['start']} formula (its weights refined below)" if "start" in stats else
                 f"K={f.K}, {_exact_words(f.exact)}, {'with' if f.uses_latents else 'no'} latent terms")
        self.log(f"fit: {len(variants) - n_starts} variants on {fit_traj.count} full-compute trajectories "
                 f"(each fit {max(v.get('fit_seconds', 0) for v in variants) * 1000:.0f} ms at most) and "
                 f"{n_starts} fixed-formula starts; best: {words} -> {score:.2f} dB ({self.metric} PSNR)")
        refits = []
        for r in range(cfg.refit):  # fit again on the cached sampler's own trajectories
            fc = forecaster_from_table(self.bundle, table, cfg.tap, "refit predictor")
            to_full = cfg.refit_target == "full"
            rows = np.asarray(fit_part.rows, dtype=np.int64)
            initials = [traj.latents[Part(fit_part.rows, (k,)).index(self.num_rows), 0] for k in fit_part.seeds]
            with bar_of(self.progress, len(fit_part.seeds) * cfg.steps, f"refit {r + 1}: own runs", "step") as bar:
                own = capture(self.sampler, {k: v[rows] for k, v in self.cond.items()}, fit_part.seeds, cfg.steps,
                              forecaster=fc, shadow=not to_full, on_step=lambda i: bar.update(), initials=initials)
            if to_full:
                own = full_targets(own, fit_traj, schedule, cfg.tap)
            cand, cstats = self.fit(own, schedule)
            cscore = self.evaluate(cand, traj, eval_part)
            refits.append({"round": r + 1, "psnr_db": cscore, "kept": cscore > score})
            self.log(f"refit {r + 1} on own trajectories: {cscore:.2f} dB ({'kept' if cscore > score else 'dropped'})")
            if cscore <= score:
                break
            table, stats, score = cand, cstats, cscore
        closed: list[dict[str, Any]] = []
        if cfg.closed_loop:  # Gauss-Newton on the cached sampler's final images, inside the exactness constraints
            probe_part = capped(eval_part, run_cap(JACOBIAN_RUNS, cfg.full_steps))

            def closed_loop(start: CoefficientTable, exact: int, start_score: float, label: str = "closed-loop"):
                return refine(start, null_directions(start, exact), lambda t: self.measure(t, traj, eval_part),
                              start_score, rounds=cfg.closed_loop, log=self.log, progress=self.progress, label=label,
                              probe=lambda t: self.measure(t, traj, probe_part)[0])

            table, score, closed = closed_loop(table, f.exact, score)
            if contender is not None:
                self.log(f"closed loop on the runner-up on another schedule, {list(contender[1].computed)} "
                         f"({contender[0]:.2f} dB)")
                ctable, cscore, cclosed = closed_loop(contender[1], contender[3].exact, contender[0],
                                                      "runner-up closed-loop")
                stats["runner_up"] = {"schedule": list(ctable.computed), "psnr_db": cscore, "kept": cscore > score,
                                      "start": contender[2].get("start", "least squares")}
                if cscore > score:
                    self.log(f"the runner-up wins: {cscore:.2f} dB against {score:.2f} dB")
                    table, score, closed, self.fit_cfg = ctable, cscore, cclosed, contender[3]
                    stats = {**contender[2], "runner_up": stats["runner_up"]}
                    schedule, f = ctable.computed, contender[3]
        if held is not None:  # runs no fit used: the honest score
            stats["holdout"] = {"fraction": cfg.holdout, **held.to_json(), "psnr_db": self.evaluate(table, traj, held),
                                "metric": self.metric}
            self.log(f"held-out score: {stats['holdout']['psnr_db']:.2f} dB ({self.metric} PSNR on "
                     f"{held.describe()}, kept out of every fit; the schedule search scored on them)")
        stats.update({"calibration_psnr_db": score, "calibration_metric": self.metric,
                      "schedule_search": search.get("candidates", [])[:10],
                      "schedule_refinement": search.get("refinement", []),
                      "schedule_search_result": {k: search[k] for k in ("evaluations", "seconds", "psnr_db", "interval",
                                                                        "kind", "leaders", "folds") if k in search},
                      "calibration_part": eval_part.to_json(), "refits": refits, "closed_loop": closed,
                      "fit_variants": variants,
                      "chosen": {"K": f.K, "exact": f.exact, "latents": f.uses_latents, "prior": f.prior,
                                 "ridge": f.ridge, "start": stats.get("start", "least squares")}})
        fspec = feature_spec(self.bundle, cfg.tap)
        lspec = TensorSpec("latent", "float32", fspec.shape) if table.uses_latents else None
        folder = self.bundle.predictor_dir(cfg.name, create=True)  # refuses links on the way
        pred = save_predictor(folder, table=table, feature_spec=fspec, name=cfg.name, method="l2p", tap=cfg.tap,
                              bundle_hash=self.bundle.hash, scheduler_hash=self.bundle.scheduler_hash,
                              latent_spec=lspec, fit_stats=stats, created_by=settings,
                              cfg_scale=self.cfg_scale, cfg_forecast=self.cfg_forecast)
        fid = projection_fidelity(traj.features[cfg.tap], f.K)
        write_bytes(folder / "fidelity.txt", (fidelity_table(fid, stats["rel_residual"]) + "\n").encode())
        plot_fidelity(fid, folder / "fidelity.png", f.K, stats["rel_residual"], schedule)
        share = float(np.mean(fid[1:] > 0.95))
        self.log(f"projection fidelity > 0.95 on {share:.0%} of steps (table: {folder / 'fidelity.txt'})")
        guided = f", CFG scale {self.cfg_scale:g}, forecasting the {self.cfg_forecast}" if self.cfg_scale > 1 else ""
        self.log(f"wrote predictor {folder} (schedule {list(schedule)}{guided})")
        return pred
