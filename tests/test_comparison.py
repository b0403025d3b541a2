"""The report's comparisons with single-task learning, on hand-made stores whose accuracies are set
exactly: seed pairing, intervals and tests against scipy, Holm over the report, win / tie / loss,
matched references and the flags of what remains unmatched, convergence flags, calibration and
sampling error against hand computation, the tidy results.csv through pandas, and the committed
H100 store against the numbers of issue 8."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from bench.kinds import make_spec
from bench.record import DatasetEntry, Entry, Manifest, Record
from bench.report import write_report
from bench.report.comparison import DELTA_M, comparisons
from bench.report.data import gather
from bench.report.references import matches
from bench.store import Store
from conftest import REPO, markdown_tables, put_result, section, skip_rendering

N = 20  # test images per task: an accuracy is k / 20
CLASSES = 4
SPEC = make_spec("multiclass", name="cls", classes=CLASSES)
REG = make_spec("regression", name="reg")
ALEX, CONV = {"name": "alexnet_cifar", "params": {}}, {"name": "convnet", "params": {"widths": [8]}}
TARGET = np.arange(N) % CLASSES


def _probs(correct: int, confidence: float = 0.625) -> np.ndarray:
    """(N, CLASSES) probabilities whose argmax is right on the first `correct` items, `confidence` on it
    (0.625 and the rest 0.125 each: exact in float16, as the store keeps them)."""
    predicted = np.where(np.arange(N) < correct, TARGET, (TARGET + 1) % CLASSES)
    probs = np.full((N, CLASSES), (1 - confidence) / (CLASSES - 1))
    probs[np.arange(N), predicted] = confidence
    return probs


def _cell(store: Store, strategy: str, seed: int | None, correct: dict[str, int | float], *, name: str = "hard_share",
          multi_task: bool = True, backbone: dict = ALEX, epochs: int = 10, best: int | list[int] = 5,
          params: int = 100, members: dict[str, str] | None = None, history: list[str] | None = None) -> str:
    """A finished cell: classification tasks get k of N right, a regression task ("reg") a given MAE."""
    cell = f"ds__{strategy}" + (f"(task={'+'.join(correct)})" if name == "stl" else "") + \
        ("" if seed is None else f"__seed{seed}")
    arrays, test, specs = {}, {}, {}
    for task, value in correct.items():
        if task == "reg":
            target = np.zeros((N, 1))
            pred = value * (-1.0) ** np.arange(N)[:, None]  # errors +-value: MAE = value
            specs[task] = make_spec("regression", name="reg").to_dict()
            test[task] = REG.metrics(pred, target)
        else:
            pred, target = _probs(int(value)), TARGET
            specs[task] = make_spec("multiclass", name=task, classes=CLASSES).to_dict()
            test[task] = SPEC.metrics(pred, target)
        arrays[f"pred__{task}"], arrays[f"target__{task}"] = pred.astype(np.float16), target
    stages = best if isinstance(best, list) else None
    extra = {"stage_best_epochs": stages, "stages": list(correct)} if stages else {}
    record = Record(suite="hand", cell=cell, dataset="ds", strategy=strategy, strategy_name=name,
                    multi_task=multi_task, tasks=tuple(correct), seed=seed, status="done", key="k", test=test,
                    config={"backbone": backbone}, best_epoch=None if members else (stages[-1] if stages else best),
                    epochs=None if members else epochs * (len(stages) if stages else 1), params=params,
                    train_seconds=1.0, specs=specs, members=members or {}, extra=extra)
    put_result(store, record, arrays)
    if history is not None:  # one row per epoch, with its stage
        (store.cell_dir(cell) / "history.csv").write_text(
            "stage,epoch,val_loss,train_loss\n" + "".join(f"{s},{i + 1},1.0,1.0\n" for i, s in enumerate(history)))
    return cell


def _manifest(store: Store, entries: list[Entry], tasks: tuple[str, ...], seeds=(0, 1, 2)) -> None:
    store.write_manifest(Manifest(name="hand", seeds=tuple(seeds), datasets=(DatasetEntry(name="ds", tasks=tasks),),
                                  strategies=tuple(entries)))


STL = Entry(id="stl", name="stl", multi_task=False)
HARD = Entry(id="hard_share", name="hard_share")
# Per seed: STL right on 10 / 14 / 18 of 20 (0.50 / 0.70 / 0.90), hard sharing on 11 / 15 / 18; both
# have MAE 0.2 on `reg` (a hard-sharing row with one task would be a single-task model).
STL_K, HARD_K = (10, 14, 18), (11, 15, 18)


def _stl(store: Store, seed: int, tasks: dict[str, float] | None = None, strategy: str = "stl", **kw) -> None:
    """The STL cells of one seed: one per task (default: cls 10 of 20 right, MAE 0.2)."""
    for task, value in (tasks or {"cls": 10, "reg": 0.2}).items():
        _cell(store, strategy, seed, {task: value}, name="stl", multi_task=False, **kw)


@pytest.fixture
def paired(tmp_path) -> tuple[Path, Store]:
    store = Store(tmp_path / "results", "hand")
    _manifest(store, [HARD, STL], ("cls", "reg"))  # hard_share listed first: the report still shows stl first
    for seed in range(3):
        _stl(store, seed, {"cls": STL_K[seed], "reg": 0.2})
        _cell(store, "hard_share", seed, {"cls": HARD_K[seed], "reg": 0.2})
    return tmp_path, store


@pytest.fixture(autouse=True)
def _no_rendering(monkeypatch):
    skip_rendering(monkeypatch)  # no test here looks at a figure


def _report(tmp_path: Path) -> str:
    return write_report(tmp_path / "results", "hand", tmp_path / "reports").read_text()


def _data(tmp_path: Path):
    return gather(tmp_path / "results", "hand", tmp_path / "reports", current_keys=None, manifest=None,
                  run_seconds=None, command="")


def test_seed_paired_difference_interval_and_test_match_scipy(paired):
    tmp_path, _ = paired
    (task, reg, dm) = comparisons(_data(tmp_path))
    assert reg.mean == 0 and reg.p == 1.0  # equal MAE on every seed
    a, b = np.array(HARD_K) / N, np.array(STL_K) / N
    want = st.ttest_rel(a, b)
    assert (task.task, task.n, task.paired) == ("cls", 3, True)
    assert task.mean == pytest.approx(0.1 / 3)  # +0.05, +0.05, 0: seed s against seed s
    assert (task.low, task.high) == pytest.approx(tuple(want.confidence_interval(0.95)), rel=1e-9)
    assert task.p == pytest.approx(want.pvalue, rel=1e-9)
    assert task.percent == pytest.approx(100 * (0.1 / 3) / 0.7)
    # delta_m per seed against the same seed's STL: the mean of 100 * (0.05 / 0.5, 0.05 / 0.7, 0 / 0.9) on
    # cls and 0 on reg
    per_seed = np.array([10.0, 100 * 0.05 / 0.7, 0.0]) / 2
    assert dm.task == DELTA_M and dm.n == 3
    assert dm.mean == pytest.approx(per_seed.mean())  # against the mean STL (0.7) it would be 2.38
    assert (dm.low, dm.high) == pytest.approx(st.t.interval(0.95, 2, per_seed.mean(), st.sem(per_seed)), rel=1e-9)
    assert dm.p == pytest.approx(st.ttest_1samp(per_seed, 0).pvalue, rel=1e-9)


def test_the_vs_stl_table_shows_points_and_delta_m_percent(paired):
    tmp_path, _ = paired
    (rows,) = markdown_tables(section(_report(tmp_path), "Against single-task learning"))
    by_task = {r["task"]: r for r in rows}
    # cls in accuracy points (x100); delta_m in % as computed (x1), both with 2 decimals
    ci = st.ttest_rel(np.array(HARD_K) / N, np.array(STL_K) / N).confidence_interval(0.95)
    assert by_task["cls"]["difference [95% CI]"] == f"{100 * 0.1 / 3:+.2f} [{100 * ci.low:+.2f}, {100 * ci.high:+.2f}] points"
    per_seed = np.array([10.0, 100 * 0.05 / 0.7, 0.0]) / 2  # as in the test above
    low, high = st.t.interval(0.95, 2, per_seed.mean(), st.sem(per_seed))
    assert by_task[DELTA_M]["difference [95% CI]"] == f"{per_seed.mean():+.2f} [{low:+.2f}, {high:+.2f}] %"
    assert by_task[DELTA_M]["n"] == "3" and by_task[DELTA_M]["difference %"] == ""


def test_holm_over_the_report_decides_win_tie_loss(paired):
    tmp_path, _ = paired
    found = comparisons(_data(tmp_path))
    p = sorted(c.p for c in found)  # cls ~0.18, delta_m ~0.2, reg 1
    # Holm over m = 3 tests, by hand: 3 p_(1), max(that, 2 p_(2)), max(that, p_(3)), capped at 1
    want = [min(1, 3 * p[0]), min(1, max(3 * p[0], 2 * p[1])), 1.0]
    assert sorted(c.p_holm for c in found) == pytest.approx(want)
    assert all(c.verdict == "tie" for c in found)  # no evidence either way


def test_a_clear_gain_wins_and_a_clear_drop_loses(tmp_path):
    store = Store(tmp_path / "results", "hand")
    _manifest(store, [STL, HARD], ("cls", "reg"))
    for seed in range(3):
        _stl(store, seed, {"cls": 10 + seed, "reg": 0.10 + 0.01 * seed})
        # ~+35 points on cls on every seed (spread 1 point) and an MAE 0.05 lower: both improvements
        _cell(store, "hard_share", seed, {"cls": 17 + seed + (seed == 1), "reg": 0.05 + 0.01 * seed})
    (cls, reg, dm) = comparisons(_data(tmp_path))
    assert (cls.task, reg.task) == ("cls", "reg")
    assert reg.mean == pytest.approx(-0.05) and reg.percent < 0  # MAE down: a gain
    assert cls.verdict == "win" and reg.verdict == "win" and dm.verdict == "win"
    text = _report(tmp_path)
    (rows,) = markdown_tables(section(text, "Results"))
    assert [r["strategy"] for r in rows] == ["stl", "hard_share"]
    assert rows[1]["vs STL"] == "cls win, reg win" and rows[0]["vs STL"] == "(reference)"


def test_delta_m_states_its_n_when_fewer_seeds_pair(tmp_path):
    # Issue 12, item 8: STL ran for seed 0 only, hard sharing for seeds 0, 1, 2 (as an ensemble's members).
    store = Store(tmp_path / "results", "hand")
    _manifest(store, [STL, HARD], ("cls", "reg"), seeds=(0,))
    _stl(store, 0)
    for seed in range(3):
        _cell(store, "hard_share", seed, {"cls": 12 + seed, "reg": 0.2})
    (task, _, dm) = comparisons(_data(tmp_path))
    assert task.n == dm.n == 1 and task.mean == pytest.approx(0.1) and math.isnan(task.p)
    assert task.verdict == "n/a"  # one pair: no test
    (rows,) = markdown_tables(section(_report(tmp_path), "Results"))
    hard = next(r for r in rows if r["strategy"] == "hard_share")
    assert hard["n"] == "3" and hard["delta_m %"] == "+10.00 (n=1)"  # (100 (12 - 10) / 10 + 0) / 2, seed 0 only


def test_references_match_backbone_and_flag_what_differs(tmp_path):
    store = Store(tmp_path / "results", "hand")
    entries = [STL, HARD, Entry(id="conv", name="hard_share"), Entry(id="seq", name="sequential_lwf"),
               Entry(id="stl_conv", name="stl", multi_task=False),
               Entry(id="named", name="hard_share", reference=("stl_conv",))]
    _manifest(store, entries, ("cls", "reg"))
    both = {"cls": 11, "reg": 0.2}
    for seed in range(2):
        _stl(store, seed, params=25, epochs=25)
        _cell(store, "hard_share", seed, both, params=50, epochs=25)
        _cell(store, "conv", seed, both, backbone=CONV, epochs=25, params=50)
        _cell(store, "seq", seed, both, name="sequential_lwf", epochs=10, best=[10, 4], params=50)
        _cell(store, "named", seed, both, backbone=ALEX, epochs=25, params=50)
    _stl(store, 0, strategy="stl_conv", backbone=CONV, epochs=25, params=25)
    d = _data(tmp_path)
    m = matches(d, "ds")
    assert list(m) == ["hard_share", "conv", "seq", "named"]  # the references are not rows
    assert m["hard_share"].references == {"cls": "stl", "reg": "stl"} and m["hard_share"].flags == ()
    # automatic matching is by backbone: the convnet row takes the convnet STL, not alexnet's
    assert m["conv"].references == {"cls": "stl_conv", "reg": "stl_conv"}
    assert m["seq"].references["cls"] == "stl" and m["seq"].flags == ("budget 20 epochs in 2 stages vs 25",)
    assert m["named"].references == {"cls": "stl_conv", "reg": "stl_conv"}  # as the suite says, whatever the backbone
    assert m["named"].flags == ("backbone alexnet_cifar vs convnet(widths=[8])",)
    conv = {c.strategy: c for c in comparisons(d) if c.task == "cls"}["conv"]
    assert conv.n == 1  # stl_conv has seed 0 only


def test_a_one_stage_budget_flag_names_no_stages(tmp_path):
    store = Store(tmp_path / "results", "hand")
    _manifest(store, [STL, HARD], ("cls", "reg"))
    for seed in range(2):
        _stl(store, seed, epochs=25, params=50)  # two STL models of 50 against one of 100: no params flag
        _cell(store, "hard_share", seed, {"cls": 11, "reg": 0.2}, epochs=10)
    assert matches(_data(tmp_path), "ds")["hard_share"].flags == ("budget 10 epochs vs 25",)


def test_no_matched_stl_rather_than_unlike_models(tmp_path):
    store = Store(tmp_path / "results", "hand")
    _manifest(store, [STL, Entry(id="conv", name="hard_share")], ("cls", "reg"))
    for seed in range(2):
        _stl(store, seed)
        _cell(store, "conv", seed, {"cls": 12, "reg": 0.1}, backbone=CONV)
    assert comparisons(_data(tmp_path)) == []
    (rows,) = markdown_tables(section(_report(tmp_path), "Results"))
    conv = rows[1]
    assert conv["delta_m %"] == "no matched STL" and conv["vs STL"] == "no matched STL"
    assert conv["notes"].endswith("no single-task entry with backbone convnet(widths=[8]) (cls, reg)")


def test_single_task_subsets_are_the_joint_rows_references(tmp_path):
    # shapes_counting: `cls_only` and `reg_only` are hard sharing on one task each; `joint` trains both.
    store = Store(tmp_path / "results", "hand")
    entries = [Entry(id="cls_only", name="hard_share"), Entry(id="reg_only", name="hard_share"),
               Entry(id="joint", name="hard_share", reference=("cls_only", "reg_only"))]
    _manifest(store, entries, ("cls", "reg"))
    for seed in range(3):
        _cell(store, "cls_only", seed, {"cls": 10 + seed}, params=60)
        _cell(store, "reg_only", seed, {"reg": 0.2}, params=60)
        _cell(store, "joint", seed, {"cls": 11 + seed, "reg": 0.1}, params=60)
    d = _data(tmp_path)
    assert d.strategies("ds") == ["cls_only", "reg_only", "joint"]
    m = matches(d, "ds")["joint"]
    assert m.references == {"cls": "cls_only", "reg": "reg_only"} and m.flags == ("params ×0.50",)
    dm = next(c for c in comparisons(d) if c.task == DELTA_M)
    per_seed = [(100 * 1 / (10 + s) + 100 * 0.1 / 0.2) / 2 for s in range(3)]  # cls +1 of 10+s; MAE halved
    assert dm.mean == pytest.approx(np.mean(per_seed)) and dm.reference == "cls_only + reg_only"


def test_an_ensemble_is_compared_unpaired_with_the_mean_reference(tmp_path):
    store = Store(tmp_path / "results", "hand")
    _manifest(store, [STL, HARD, Entry(id="ens", name="ensemble", of="hard_share", seeds=(0, 1))], ("cls", "reg"))
    members = {}
    for seed in range(2):
        _stl(store, seed, {"cls": 10 + 2 * seed, "reg": 0.2}, params=50)
        members[_cell(store, "hard_share", seed, {"cls": 12, "reg": 0.2})] = "k"
    _cell(store, "ens", None, {"cls": 15, "reg": 0.2}, name="ensemble", members=members, params=200)
    d = _data(tmp_path)
    m = matches(d, "ds")["ens"]
    assert not m.paired and m.flags == ("2 models per task vs 1", "params ×2.00")
    ens = {c.strategy: c for c in comparisons(d) if c.task == "cls"}["ens"]
    assert ens.mean == pytest.approx(15 / 20 - 11 / 20) and math.isnan(ens.p) and ens.verdict == "n/a"
    assert ens.percent == pytest.approx(100 * 0.2 / 0.55)  # in % of the mean reference
    assert ens.image_mean == pytest.approx(0.2)  # the ensemble against each STL seed, on the same images
    (rows,) = markdown_tables(section(_report(tmp_path), "Results"))
    assert rows[2]["delta_m %"] == f"{100 * 0.2 / 0.55 / 2:+.2f} (vs mean STL)"  # and 0 on reg


def test_identical_models_have_no_image_level_difference(tmp_path):
    store = Store(tmp_path / "results", "hand")
    _manifest(store, [STL, HARD], ("cls", "reg"))
    for seed in range(3):
        _stl(store, seed, {"cls": 12, "reg": 0.2})
        _cell(store, "hard_share", seed, {"cls": 12, "reg": 0.2})
    (task, _, _) = comparisons(_data(tmp_path))
    assert task.image_mean == 0 and task.image_p == 1.0 and task.p == 1.0 and task.verdict == "tie"


def test_calibration_and_sampling_error_in_the_report(paired):
    tmp_path, _ = paired
    text = _report(tmp_path)
    (table,) = markdown_tables(section(text, "Classification metrics per task"))
    stl = next(r for r in table if r["strategy"] == "stl")
    # every item's top probability is 0.625: NLL of a right item -ln 0.625, of a wrong one -ln 0.125;
    # ECE = |accuracy - 0.625| (all in one bin), per seed.
    nll = [-(k * math.log(0.625) + (N - k) * math.log(0.125)) / N for k in STL_K]
    ece = [100 * abs(k / N - 0.625) for k in STL_K]
    assert stl["NLL"] == f"{np.mean(nll):.3f} ± {np.std(nll, ddof=1):.3f}"
    assert stl["ECE %"] == f"{np.mean(ece):.2f} ± {np.std(ece, ddof=1):.2f}"
    se = 100 * math.sqrt(0.7 * 0.3 / N)  # mean STL accuracy 0.7 on N = 20 test images
    assert f"ds / cls (N = 20): stl {se:.2f}, hard_share " in text


def test_still_improving_per_cell_and_per_stage(tmp_path):
    store = Store(tmp_path / "results", "hand")
    _manifest(store, [STL, HARD, Entry(id="seq", name="sequential_lwf")], ("cls", "reg"))
    for seed in range(2):
        _stl(store, seed, epochs=4, best=3, history=[""] * 4)
        _cell(store, "hard_share", seed, {"cls": 11, "reg": 0.2}, epochs=4, best=4 - seed, history=[""] * 4)
        _cell(store, "seq", seed, {"cls": 11, "reg": 0.2}, name="sequential_lwf", epochs=2, best=[2, 1],
              history=["1:a", "1:a", "2:b", "2:b"])
    text = _report(tmp_path)
    (rows,) = markdown_tables(section(text, "Results"))
    notes = {r["strategy"]: r["notes"] for r in rows}
    assert notes["stl"] == ""
    assert notes["hard_share"].startswith("still improving: 1 of 2 cells;")  # seed 0 kept epoch 4 of 4
    assert notes["seq"].startswith("still improving (stage 1): 2 of 2 cells")  # stage 1 kept its last epoch
    appendix = {r["cell"]: r["best epoch"] for r in markdown_tables(section(text, "Appendix: every cell"))[0]}
    assert appendix["ds__hard_share__seed0"] == "4 of 4 (still improving)"
    assert appendix["ds__hard_share__seed1"] == "3 of 4"
    assert appendix["ds__seq__seed0"] == "2 of 2, 1 of 2 (still improving)"


def test_results_csv_round_trips_through_pandas(paired):
    tmp_path, store = paired
    _report(tmp_path)
    frame = pd.read_csv(store.dir / "results.csv")
    metrics = len(SPEC.metrics(_probs(10), TARGET)) + 2  # classification's, and MAE, RMSE
    assert len(frame) == 3 * 2 * metrics  # 3 seeds x (2 STL cells, 1 task each + 1 cell, 2 tasks) x metric, test
    assert list(frame.columns[:7]) == ["suite", "dataset", "cell", "strategy", "strategy_name", "seed", "status"]
    acc = frame[(frame.metric == "accuracy") & (frame.split == "test")].set_index("cell")["value"]
    assert acc["ds__stl(task=cls)__seed1"] == pytest.approx(14 / 20)
    assert acc["ds__hard_share__seed2"] == pytest.approx(18 / 20)
    mae = frame[frame.metric == "mae"]
    assert list(mae.task.unique()) == ["reg"] and mae.value.tolist() == pytest.approx([0.2] * 6)
    assert frame.seed.dtype == np.int64 and set(frame.status) == {"done"} and not frame.stale.any()
    assert frame.groupby("strategy").value.count().to_dict() == {"hard_share": 3 * metrics, "stl": 3 * metrics}


def test_every_table_is_saved_as_csv_beside_the_report(paired):
    tmp_path, _ = paired
    text = _report(tmp_path)
    links = re.findall(r"\[CSV\]\(([^)]+)\)", text)
    assert "hand/results_ds.csv" in links and "hand/vs_stl.csv" in links
    (results,) = markdown_tables(section(text, "Results"))
    frame = pd.read_csv(tmp_path / "reports" / "hand" / "results_ds.csv", dtype=str, keep_default_na=False)
    assert frame.to_dict("records") == results


CIFAR = REPO / "tests" / "data" / "h100_store" / "cifar_mtl"  # the store issue 8 quotes


def test_committed_cifar_store_gives_issue_8s_intervals(tmp_path):
    """Issue 8's numbers, computed by hand from the H100 store: hard sharing's delta_m +0.29 with a 95% CI
    of about [-0.51, +1.10] (p about 0.26); class10 -0.55 [-1.77, +0.66]; animal +1.19 [+1.01, +1.37]."""
    d = gather(CIFAR.parent, "cifar_mtl", tmp_path, current_keys=None, manifest=None, run_seconds=None,
               command="")
    hard = {c.task: c for c in comparisons(d) if c.strategy == "hard_share"}
    assert (round(hard[DELTA_M].mean, 2), round(hard[DELTA_M].low, 2), round(hard[DELTA_M].high, 2)) == (0.29, -0.51, 1.10)
    assert hard[DELTA_M].p == pytest.approx(0.26, abs=0.005)
    assert [round(100 * x, 2) for x in (hard["class10"].mean, hard["class10"].low, hard["class10"].high)] == \
        [-0.55, -1.77, 0.66]
    assert [round(100 * x, 2) for x in (hard["animal"].mean, hard["animal"].low, hard["animal"].high)] == \
        [1.19, 1.01, 1.37]
    assert hard["animal"].verdict == "win" and hard["class10"].verdict == "tie"
    assert {c.strategy for c in comparisons(d)} == {"hard_share", "cross_stitch", "sequential_lwf",
                                                    "sequential_finetune", "ensemble"}  # dual_stream: no matched STL


def test_improving_stages_and_stage_lengths_by_hand():
    from bench.report.convergence import improving_stages, stage_lengths

    assert improving_stages([10], [10]) == [1] and improving_stages([9], [10]) == []
    assert improving_stages([3, 5, 2], [3, 6, 2]) == [1, 3]
    with pytest.raises(ValueError, match="outside"):
        improving_stages([11], [10])
    with pytest.raises(ValueError, match="2 best epochs for 1 stages"):
        improving_stages([1, 2], [3])
    one = pd.DataFrame({"stage": [np.nan] * 4, "epoch": [1, 2, 3, 4]})  # one-stage cells leave it empty
    assert stage_lengths(one) == [4] and stage_lengths(one.drop(columns="stage")) == [4]
    assert stage_lengths(pd.DataFrame({"stage": ["1:a", "1:a", "2:b", "2:b", "2:b"]})) == [2, 3]
    # in training order, not by label: "10:j" sorts before "9:i"
    assert stage_lengths(pd.DataFrame({"stage": ["9:i", "9:i", "10:j", "10:j", "10:j"]})) == [2, 3]


def test_still_improving_without_a_history_reads_the_record():
    from bench.report.convergence import still_improving

    def record(**kw) -> Record:
        return Record(**{"suite": "hand", "cell": "c", "dataset": "ds", "strategy": "s", "strategy_name": "hard_share",
                         "multi_task": True, "tasks": ("cls",), "seed": 0, "status": "done", "key": "k", **kw})

    # no history: a one-stage cell's length is its recorded epochs
    assert still_improving(record(best_epoch=10, epochs=10), None) == [1]
    assert still_improving(record(best_epoch=7, epochs=10), None) == []
    # nothing to tell from: no best epoch, a combined cell, or neither history nor epochs
    assert still_improving(record(best_epoch=None, epochs=10), None) is None
    assert still_improving(record(best_epoch=10, epochs=10, members={"m": "k"}), None) is None
    assert still_improving(record(best_epoch=10, epochs=None), None) is None
