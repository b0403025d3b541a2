"""The weighting seam from suite to history: validation (exit 2 naming the key path and the choices),
cell names and keys, the default step unchanged, a method's weights and learned parameters in
training, the gradient-cosine probe that leaves training untouched, and MTAN / MMoE against their
papers' formulas."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bench import cli
from bench.config import PluginConfig, SuiteError, TrainConfig, load_suite
from bench.grid import expand
from bench.kinds import make_spec
from bench.models import BACKBONES, BackboneContext
from bench.models.mmoe import MMoENet
from bench.models.mtan import Attention, MTANNet
from bench.store import Store
from bench.cuda_graph import restore
from bench.trainer import Trainer
from bench.weighting import WEIGHTINGS, build, split_params
from bench.weighting.loss_level import Equal
from bench.weighting.probe import CosineProbe

CPU = torch.device("cpu")
HEADS = {"quadrant": {"hidden": [8]}}  # a dict param: like the weighting's parameters, only in the key


def _run(raw: dict, write_suite, tmp_path, name: str) -> Store:
    path = write_suite(raw, name)
    code = cli.main(["run", str(path), "--results", str(tmp_path / name), "--reports", str(tmp_path / f"{name}_rep"),
                     "--device", "cpu", "--no-report"])
    assert code == 0
    return Store(tmp_path / name, raw["name"])


def _outcome(store: Store, cell: str, drop: tuple[str, ...] = ()) -> tuple[dict, dict, pd.DataFrame]:
    r = store.record(cell)
    timing = [c for c in store.history(cell).columns if c in ("train_seconds", "step_ms", "images_per_second",
                                                               "grad_cos_seconds") or c.startswith(drop)]
    return {"test": r.test, "val": r.val, "best": r.best_epoch}, store.predictions(cell), \
        store.history(cell).drop(columns=timing)


def _assert_same(a, b) -> None:
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)
    pd.testing.assert_frame_equal(a[2], b[2])


# ---- the default is today's step --------------------------------------------------------------
def test_explicit_equal_weighting_is_the_default_cell(tiny_suite, write_suite, tmp_path):
    plain = tiny_suite(strategies=["hard_share"], train={**tiny_suite()["train"], "epochs": 2})
    explicit = copy.deepcopy(plain)
    explicit["strategies"] = [{"name": "hard_share", "weighting": {"name": "equal"}}]
    (a,), (b,) = (expand(load_suite(write_suite(r, n))) for r, n in ((plain, "a"), (explicit, "b")))
    assert (a.name, a.key) == (b.name, b.key) == ("synthetic__hard_share__seed0", a.key)
    first, again = (_outcome(_run(r, write_suite, tmp_path, n), a.name) for r, n in ((plain, "a"), (explicit, "b")))
    _assert_same(first, again)
    assert (first[2][["weight_quadrant", "weight_top", "weight_brightness"]] == 1.0).all().all()


def test_the_trainers_equal_step_is_the_weighted_sum_bit_for_bit():
    # Before the seam the step was `((losses * loss_weights).sum() + extra).backward()`.
    torch.manual_seed(0)
    specs = {"q": make_spec("multiclass", name="q", classes=4), "r": make_spec("regression", name="r")}
    ctx = BackboneContext(in_channels=3, image_size=16)
    model = BACKBONES.get("convnet")(ctx, widths=[4, 8], hidden=8)
    from bench.strategies import STRATEGIES

    net = STRATEGIES.get("hard_share")().build(specs, lambda: model)
    ref = copy.deepcopy(net)
    cfg = TrainConfig(loss_weights={"q": 1.0, "r": 10.0})
    x, y = torch.randn(6, 3, 16, 16), {"q": torch.randint(0, 4, (6,)), "r": torch.rand(6, 1)}
    out = ref(x)
    losses = torch.stack([specs[t].loss(out[t], y[t]) for t in specs])
    ((losses * torch.tensor([1.0, 10.0])).sum() + losses.new_zeros(())).backward()

    trainer = Trainer(cfg, CPU, 0)
    method = trainer.method(list(specs))
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    trainer._step_fn(trainer._losses_fn(net, specs, None, False, method), opt, method, *split_params(net),
                     torch.zeros(6))(x, y, {})
    for (n, p), q in zip(net.named_parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad), n


# ---- suites: names, keys and errors -----------------------------------------------------------
def test_weighting_is_in_the_name_unless_the_entry_has_an_id_and_its_parameters_in_the_key(tiny_suite, write_suite):
    raw = tiny_suite(strategies=[{"name": "hard_share", "id": "c4", "weighting": {"name": "cagrad", "c": 0.4}},
                                 {"name": "hard_share", "id": "c8", "weighting": {"name": "cagrad", "c": 0.8}},
                                 {"name": "cross_stitch", "weighting": "pcgrad", "heads": HEADS}])
    c4, c8, cs = expand(load_suite(write_suite(raw)))
    assert [c.name for c in (c4, c8, cs)] == ["synthetic__c4__seed0", "synthetic__c8__seed0",
                                              "synthetic__cross_stitch(weighting=pcgrad)__seed0"]
    assert c4.key != c8.key and c4.resolved()["strategy"]["weighting"] == {"name": "cagrad", "params": {"c": 0.4}}
    assert cs.strategy.weighting == PluginConfig(name="pcgrad")  # a bare name is a method without parameters


@pytest.mark.parametrize("entry, fragments", [
    ({"name": "hard_share", "weighting": {"name": "pcgard"}},
     ["strategies[0].weighting.name: unknown weighting 'pcgard'; valid: " + ", ".join(WEIGHTINGS.names())]),
    ({"name": "hard_share", "weighting": "uncertainity"}, ["strategies[0].weighting.name: unknown weighting"]),
    ({"name": "hard_share", "weighting": {"name": "dwa", "temprature": 2.0}},
     ["strategies[0].weighting.temprature: unknown parameter; valid: temperature"]),
    ({"name": "hard_share", "weighting": {"name": "cagrad", "c": "big"}}, ["strategies[0].weighting.c: expected float"]),
    ({"name": "hard_share", "weighting": {"name": "cagrad", "c": -1.0}},
     ["strategies[0].weighting.c: expected a number >= 0, got -1.0"]),
    ({"name": "hard_share", "tasks": ["quadrant", "top"], "weighting": "krum"},
     ["strategies[0].weighting.n_byzantine", "Krum needs n_byzantine + 3 tasks; this cell has 2"]),
    ({"name": "stl", "weighting": "uncertainty"},
     ["strategies[0].weighting: stl trains one task per model", "cross_stitch, hard_share, mmoe, mtan"]),
    ({"name": "sequential_lwf", "weighting": "dwa"}, ["strategies[0].weighting: sequential_lwf trains one task"]),
    ({"name": "mmoe", "experts": 0}, ["strategies[0].experts: 0 is out of range; valid: >= 1"]),
], ids=["unknown method", "unknown bare name", "misspelt parameter", "wrong type", "bad value", "too few tasks",
        "single-task strategy", "sequential strategy", "mmoe experts"])
def test_bad_weighting_exits_2_naming_the_key_path(tiny_suite, write_suite, capsys, entry, fragments):
    path = write_suite(tiny_suite(strategies=[entry]))
    assert cli.main(["validate", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert f"invalid suite: {path}: " in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} missing from: {err}"


def test_an_ensemble_takes_no_weighting(tiny_suite, write_suite, capsys):
    raw = tiny_suite(strategies=["hard_share", {"name": "ensemble", "of": "hard_share", "seeds": [0],
                                                "weighting": "pcgrad"}])
    assert cli.main(["validate", str(write_suite(raw))]) == 2
    assert "strategies[1].weighting: ensemble trains one task per model or stage, or trains nothing" in \
        " ".join(capsys.readouterr().err.split())


def test_mtan_and_mmoe_cells_are_keyed_on_their_model_modules(tiny_suite, write_suite):
    cells = expand(load_suite(write_suite(tiny_suite(strategies=["hard_share", "mtan", "mmoe"]))))
    files = {c.strategy.id: set(c.code_files()) for c in cells}
    assert "models/mtan.py" in files["mtan"] and "models/mmoe.py" in files["mmoe"]
    assert not {"models/mtan.py", "models/mmoe.py"} & files["hard_share"]


# ---- the method in training -------------------------------------------------------------------
def test_a_single_task_fit_uses_equal_weights():
    trainer = Trainer(TrainConfig(), CPU, 0, weighting=PluginConfig(name="cagrad", params={"c": 0.5}))
    assert type(trainer.method(["a"])) is Equal  # cagrad would rescale a lone gradient
    assert type(trainer.method(["a", "b"])).__name__ == "CAGrad"


def test_dwa_weights_in_the_history_follow_its_formula(tiny_suite, write_suite, tmp_path):
    # Liu et al. 2019, eq. 7: lambda_k(t) = T exp(w_k / 2) / sum_i exp(w_i / 2), w_k = L_k(t-1) / L_k(t-2),
    # from the epochs' mean training losses that the history itself records; 1 for the first two epochs.
    raw = tiny_suite(strategies=[{"name": "hard_share", "weighting": "dwa"}],
                     train={**tiny_suite()["train"], "epochs": 4})
    store = _run(raw, write_suite, tmp_path, "dwa")
    h = store.history("synthetic__hard_share(weighting=dwa)__seed0")
    tasks = ["quadrant", "top", "brightness"]
    weights, losses = h[[f"weight_{t}" for t in tasks]].to_numpy(), h[[f"train_loss_{t}" for t in tasks]].to_numpy()
    np.testing.assert_allclose(weights[:2], 1.0)
    for epoch in (2, 3):  # 0-based rows 2 and 3: epochs 3 and 4
        ratio = losses[epoch - 1] / losses[epoch - 2]
        expected = 3 * np.exp(ratio / 2) / np.exp(ratio / 2).sum()
        np.testing.assert_allclose(weights[epoch], expected, rtol=1e-5)


def test_uncertainty_log_variances_train_in_their_own_group_without_decay(tiny_suite, write_suite, tmp_path):
    trainer = Trainer(TrainConfig(weight_decay=0.5, optimizer="adamw"), CPU, 0,
                      weighting=PluginConfig(name="uncertainty"))
    method = trainer.method(["a", "b"])
    model = nn.Linear(2, 2)
    model.param_groups = lambda: {"backbone": list(model.parameters())}
    groups = {g["name"]: g for g in trainer._optimizer(model, {}, method=method).param_groups}
    assert groups["weighting"]["params"] == [method.log_vars] and groups["weighting"]["weight_decay"] == 0.0
    assert groups["backbone"]["weight_decay"] == 0.5

    raw = tiny_suite(strategies=[{"name": "hard_share", "weighting": "uncertainty"}])
    h = _run(raw, write_suite, tmp_path, "unc").history("synthetic__hard_share(weighting=uncertainty)__seed0")
    weights = h[["weight_quadrant", "weight_top", "weight_brightness"]].to_numpy()
    assert (weights > 0).all() and not np.allclose(weights, 1.0)  # exp(-s) moved: s was stepped


def test_gradient_aggregators_record_nan_weights_and_still_train(tiny_suite, write_suite, tmp_path):
    raw = tiny_suite(strategies=[{"name": "hard_share", "weighting": "graddrop"}])
    store = _run(raw, write_suite, tmp_path, "gd")
    cell = "synthetic__hard_share(weighting=graddrop)__seed0"
    h = store.history(cell)
    assert h.weight_top.isna().all() and np.isfinite(h.train_loss).all()  # nan weights are not a divergence
    assert store.record(cell).status == "done"


def test_the_graph_warm_up_restore_covers_the_method():
    # GraphedStep undoes its warm-up steps on every module it is given: the model and the method.
    method = build("gradnorm", {}, torch.ones(2))
    model = nn.Linear(2, 2)
    opt = torch.optim.Adam([*model.parameters(), *method.parameters()])
    saved = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in (model, method)]
    with torch.no_grad():
        method.weights.add_(1.0)
        method.initial.fill_(7.0)
        method.started.fill_(True)
        model.weight.add_(1.0)
    restore([model, method], opt, saved)
    for m, state in zip((model, method), saved):
        for k, v in m.state_dict().items():
            assert torch.equal(v, state[k]), k


# ---- the gradient-cosine probe ----------------------------------------------------------------
def test_the_cosine_probe_changes_nothing_in_training(tiny_suite, write_suite, tmp_path):
    base = tiny_suite(train={**tiny_suite()["train"], "epochs": 2})
    base["backbone"] = {"name": "convnet", "widths": [4, 8], "dropout": 0.5, "hidden": 8}  # dropout and BatchNorm
    probed = copy.deepcopy(base)
    probed["train"]["grad_cosine_every"] = 1
    cell = "synthetic__hard_share__seed0"
    plain = _outcome(_run(base, write_suite, tmp_path, "plain"), cell)
    measured = _outcome(_run(probed, write_suite, tmp_path, "probed"), cell, drop=("grad_cos_",))
    _assert_same(plain, measured)
    h = Store(tmp_path / "probed", "tiny").history(cell)
    pairs = ["grad_cos_quadrant_vs_top", "grad_cos_quadrant_vs_brightness", "grad_cos_top_vs_brightness"]
    assert h[pairs].abs().le(1.0).all().all() and h[pairs].notna().all().all()


def test_the_cosine_probe_measures_what_autograd_gives():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.3))
    heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(3))
    model = nn.ModuleDict({"trunk": trunk, "heads": heads}).train()
    x = torch.randn(8, 3)

    def losses(xb, yb, mb):
        z = trunk(xb)
        return torch.stack([(h(z) - i).pow(2).mean() for i, h in enumerate(heads)])

    shared = list(trunk.parameters())
    state = torch.random.get_rng_state()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    probe = CosineProbe(model, losses, shared, 3, every=2, device=CPU, clock=lambda: 0.0)
    probe(1, x, {}, {})  # not a multiple of `every`: nothing measured
    probe(2, x, {}, {})
    columns, _ = probe.end_epoch(["p", "q", "r"])
    assert torch.equal(torch.random.get_rng_state(), state)  # dropout will draw the same masks in the step
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())  # running statistics untouched

    torch.random.set_rng_state(state)  # the same dropout mask as the probe's forward
    parts = losses(x, {}, {})
    grads = [torch.cat([g.flatten() for g in torch.autograd.grad(parts[i], shared, retain_graph=True)]) for i in range(3)]
    expected = {f"grad_cos_{a}_vs_{b}": float(nn.functional.cosine_similarity(grads[i], grads[j], dim=0))
                for i, j, a, b in ((0, 1, "p", "q"), (0, 2, "p", "r"), (1, 2, "q", "r"))}
    assert columns.keys() == expected.keys()
    for k, v in expected.items():
        assert columns[k] == pytest.approx(v, abs=1e-5), k
    assert all(math.isnan(v) for v in probe.end_epoch(["p", "q", "r"])[0].values())  # an epoch without measurements


# ---- MTAN and MMoE against their formulas -----------------------------------------------------
SPECS = {"q": make_spec("multiclass", name="q", classes=4), "r": make_spec("regression", name="r", dim=2)}


def _backbone():
    ctx = BackboneContext(in_channels=3, image_size=16)
    return BACKBONES.get("convnet")(ctx, widths=[4, 6, 8], hidden=8)


def test_mtan_with_open_masks_is_hard_sharing():
    # x_j = a_j * p_j: with every mask a_j = 1 each task reads the backbone's own features.
    torch.manual_seed(0)
    net = MTANNet(_backbone(), SPECS).eval()
    for attention in net.attention.values():
        for mask in attention:
            assert isinstance(mask, Attention)
            bn = mask[-2]  # the BatchNorm before the sigmoid
            nn.init.zeros_(bn.weight)
            nn.init.constant_(bn.bias, 50.0)  # sigmoid(50) is 1 in float32
    x = torch.randn(5, 3, 16, 16)
    out = net(x)
    vector = net.backbone.trunk(net.backbone(x))
    for t in SPECS:
        torch.testing.assert_close(out[t], net.heads[t](vector))


def test_mtan_masks_gate_each_stage_per_task():
    torch.manual_seed(0)
    net = MTANNet(_backbone(), SPECS)
    assert [len(a) for a in net.attention.values()] == [3, 3]  # one mask per stage and task
    assert net.backbone.shapes()[1:] == [(4, 8, 8), (6, 4, 4), (8, 2, 2)]
    groups = net.param_groups()
    assert set(map(id, net.attention["q"].parameters())) <= set(map(id, groups["head/q"]))
    assert set(map(id, net.resample.parameters())) <= set(map(id, groups["shared"]))  # the paper's shared f


def test_mmoe_gates_mix_the_experts():
    torch.manual_seed(0)
    net = MMoENet(_backbone, SPECS, experts=3).eval()
    x = torch.randn(5, 3, 16, 16)
    gates = {t: g(x) for t, g in net.gates.items()}
    for g in gates.values():  # a softmax over the experts per image
        assert g.shape == (5, 3) and (g > 0).all()
        torch.testing.assert_close(g.sum(1), torch.ones(5))
    vectors = [e.trunk(e(x)) for e in net.experts]  # f_k(x)
    out = net(x)
    for t in SPECS:
        mixed = sum(gates[t][:, k:k + 1] * vectors[k] for k in range(3))  # sum_k g^t(x)_k f_k(x)
        torch.testing.assert_close(out[t], net.heads[t](mixed))
    with torch.no_grad():  # a gate sure of expert 1 routes its task through that expert alone
        net.gates["q"][1].weight.zero_()
        net.gates["q"][1].bias.copy_(torch.tensor([-50.0, 50.0, -50.0]))
    torch.testing.assert_close(net(x)["q"], net.heads["q"](vectors[1]))
    assert math.isclose(sum(p.numel() for p in net.gates["q"].parameters()), (3 * 16 * 16 + 1) * 3)


def test_fp16_runs_with_equal_weighting_only(tiny_suite, write_suite):
    raw = tiny_suite(strategies=["hard_share", {"name": "hard_share", "id": "pcgrad", "weighting": "pcgrad"}])
    raw["train"]["precision"] = "fp16"
    with pytest.raises(SuiteError, match=r"strategies\.pcgrad\.weighting: pcgrad with train\.precision fp16; .*bf16 or fp32"):
        expand(load_suite(write_suite(raw)))
    raw["strategies"] = ["hard_share"]
    assert expand(load_suite(write_suite(raw, "equal")))  # equal keeps fp16's scaled step
