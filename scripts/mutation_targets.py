"""What scripts/mutation_pass.py mutates, and the survivors judged equivalent: edit these, not the pass.

TARGETS names, per module that produces reported numbers, the functions to mutate and the module's
own test files; HAND the text mutations no one-node operator produces (issue 8's list); EQUIVALENT
the surviving mutants that compute the same numbers, each with why.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hand:
    """A text mutation: `old` (found exactly once in the module) becomes `new`."""
    module: str
    function: str
    name: str
    old: str
    new: str


# module -> (functions or Class.methods to mutate, its own test files under tests/)
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "bench/report/stats.py": (["mean_std", "delta_m", "t_interval", "ttest_p", "pair_by_seed", "paired_difference",
                               "holm", "win_tie_loss", "binomial_se"],
                              ["test_stats.py", "test_comparison.py", "test_ensemble.py"]),
    "bench/report/prediction_stats.py": (["mcnemar_exact", "bootstrap_difference", "nll",
                                          "expected_calibration_error"],
                                         ["test_stats.py", "test_comparison.py"]),
    "bench/report/forgetting.py": (["forgetting", "bwt", "average_final"], ["test_forgetting.py", "test_sequential.py"]),
    "bench/kinds/classification.py": (["confusion", "classification_metrics", "_ratio"],
                                      ["test_stats.py", "test_tasks.py", "test_kinds.py"]),
    "bench/kinds/regression.py": (["Regression.metrics"], ["test_tasks.py", "test_kinds.py"]),
    "bench/combine.py": (["member_gains"], ["test_ensemble.py"]),
    "bench/trainer.py": (["Trainer.fit", "Trainer._selection_score"],
                         ["test_trainer.py", "test_schedules.py", "test_sequential.py"]),
    "bench/schedules.py": (["LrSchedule.__init__", "LrSchedule.factor", "LrSchedule.step", "LrSchedule.epoch_end",
                            "EarlyStopping.update"], ["test_schedules.py", "test_trainer.py"]),
    "bench/models/nets.py": (["CrossStitchUnit.__init__", "CrossStitchUnit.forward"], ["test_models.py"]),
    "bench/record.py": (["make_key", "code_hashes", "changed_code", "stale_reason"], ["test_record.py"]),
    "bench/grid.py": (["Cell.key"], ["test_record.py", "test_grid.py"]),
    "bench/store.py": (["_atomic", "Store.finish", "Store._swap", "Store.is_done"], ["test_store.py"]),
    "bench/report/convergence.py": (["improving_stages", "stage_lengths", "still_improving"], ["test_comparison.py"]),
    "bench/report/comparison.py": (["_task", "_image_level", "_delta_m", "_corrected"], ["test_comparison.py"]),
    "bench/report/references.py": (["match", "_automatic", "_flags", "_params", "_budget"], ["test_comparison.py"]),
}


# The breaks issue 8 names (and a few of the same kind) that no one-node operator produces.
HAND: list[Hand] = [
    Hand("bench/trainer.py", "Trainer.fit", "epoch selected on the test split",
         "val = self.evaluate(model, data, data.val, {**specs, **(monitor or {})})",
         "val = self.evaluate(model, data, data.test, {**specs, **(monitor or {})})"),
    Hand("bench/trainer.py", "Trainer.fit", "best epoch's weights not restored",
         "        model.load_state_dict(best[3])\n", ""),
    Hand("bench/trainer.py", "Trainer.fit", "ties go to the later epoch",  # also an AST site: here for sure
         "if best is None or score > best[0]:", "if best is None or score >= best[0]:"),
    Hand("bench/report/stats.py", "mean_std", "population std",
         "float(v.std(ddof=1)) if len(v) > 1", "float(v.std(ddof=0)) if len(v) > 1"),
    Hand("bench/report/stats.py", "t_interval", "population std",
         "(1 + confidence) / 2) * v.std(ddof=1)", "(1 + confidence) / 2) * v.std(ddof=0)"),
    Hand("bench/report/stats.py", "ttest_p", "population std", "sd = v.std(ddof=1)", "sd = v.std(ddof=0)"),
    Hand("bench/report/comparison.py", "_delta_m", "delta_m against the mean of all STL seeds, not the same seed",
         "{t: ref[t][s] for t in tasks}, higher) for s in seeds]",
         "{t: float(np.mean(list(ref[t].values()))) for t in tasks}, higher) for s in seeds]"),
    Hand("bench/report/comparison.py", "_task", "difference against the mean of all STL seeds, not the same seed",
         "diff = paired_difference(a, b)",
         "diff = paired_difference(a, np.full_like(b, np.mean(list(reference.values()))))"),
    Hand("bench/report/forgetting.py", "forgetting", "baseline from the first stage's row, not R[j][j]",
         "baseline, final = np.diag(R).copy(), R[-1].copy()", "baseline, final = R[0].copy(), R[-1].copy()"),
    Hand("bench/report/forgetting.py", "bwt", "baseline from the first stage's row, not R[j][j]",
         "R[last, cols] - R[cols, cols]", "R[last, cols] - R[0, cols]"),
    Hand("bench/models/nets.py", "CrossStitchUnit.__init__", "off-diagonal value on the diagonal",
         "alpha.fill_diagonal_(self_weight)", "alpha.fill_diagonal_(other)"),
    Hand("bench/models/nets.py", "CrossStitchUnit.__init__", "diagonal and off-diagonal values swapped",
         "alpha = torch.full((tasks, tasks), other)\n        alpha.fill_diagonal_(self_weight)",
         "alpha = torch.full((tasks, tasks), self_weight)\n        alpha.fill_diagonal_(other)"),
    Hand("bench/record.py", "make_key", "key ignores the code",
         'json.dumps({"config": config, "code": code}', 'json.dumps({"config": config}'),
    Hand("bench/grid.py", "Cell.key", "key ignores the code",
         "return R.make_key(self.resolved(), self.code())", "return R.make_key(self.resolved(), {})"),
    Hand("bench/store.py", "_atomic", "write in place, not through a temporary file",
         '    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")\n    try:\n'
         '        os.fchmod(fd, 0o666 & ~_umask())',
         '    fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), path\n    try:\n'
         '        os.fchmod(fd, 0o666 & ~_umask())'),
    Hand("bench/store.py", "Store._swap", "a rerun's result merged into the old folder (old files stay)",
         "        if target.exists():\n            os.rename(target, aside)\n        os.rename(attempt, target)",
         "        if target.exists():\n            shutil.copytree(attempt, target, dirs_exist_ok=True)\n"
         "            shutil.rmtree(attempt)\n        else:\n            os.rename(attempt, target)"),
    Hand("bench/store.py", "Store._swap", "the old record stays in place (the new result is dropped)",
         "        if target.exists():\n            os.rename(target, aside)\n        os.rename(attempt, target)",
         "        if target.exists():\n            shutil.rmtree(attempt)\n            return\n"
         "        os.rename(attempt, target)"),
    Hand("bench/store.py", "Store.finish", "a failed rerun replaces the finished result",
         'if record.status != "done" and self._has_finished(record.cell):', "if False:"),
    Hand("bench/store.py", "Store.is_done", "a stored result of another key counts as done",
         "return record is not None and record.key == key", "return record is not None"),
]

# Survivors judged equivalent (the same reported numbers), by key, with why. A key holds its line: when
# the source moves, the mutant shows as a plain survivor again, to be judged again.
EQUIVALENT = {
    "bench/kinds/regression.py:Regression.metrics:52:const 1->2#3": "numpy reads any negative size as -1",
    "bench/kinds/regression.py:Regression.metrics:52:const 1->2#5": "numpy reads any negative size as -1",
    "bench/trainer.py:Trainer._selection_score:389:Mult->Div#2": "x / 1 and x / -1 are x * 1 and x * -1 exactly",
    "bench/schedules.py:LrSchedule.step:103:Lt->LtE#2": "at step == warm the rate is the base one either way: "
    "ReduceLROnPlateau has had at most its first (never reducing) call by then",
    "bench/models/nets.py:CrossStitchUnit.__init__:127:const 0.9->0#1": "the default is unused: CrossStitchNet "
    "always passes the strategy's self_weight",
    "bench/models/nets.py:CrossStitchUnit.__init__:127:const 0.9->1.9#0": "the default is unused: CrossStitchNet "
    "always passes the strategy's self_weight",
    "bench/report/comparison.py:_delta_m:147:const 0->1#6": "n is replaced on every path that returns",
    "bench/report/references.py:_flags:123:Gt->GtE#6": "|p / q - 1| is never exactly 0.1 in floating point "
    "(r - 1 is exact for r in [0.5, 2], and 1 +- 0.1 is not a double)",
    "bench/report/references.py:match:70:any->all#3": "an entry's cells are all combined or all trained, and an "
    "entry without cells has no references to pair",
}
