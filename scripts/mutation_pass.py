"""A mutation pass over the modules that produce the reported numbers (issue 8, "Tests that catch a
wrong number").

Each mutant breaks one thing in one named function of one module: a one-node AST change (an operator
swapped, `<` for `<=`, a constant off by one or zeroed, max for min, True for False, a `not` or a
minus dropped, `ddof` flipped), or one of the hand-written text mutations (HAND) that no operator
produces (the epoch selected on the test split, the best weights not restored, delta_m against every
STL seed, a write that is not atomic...). For each mutant, the module is rewritten in a copy of the
repository and that module's own test files run there (`pytest -x -q`, one thread, niced); the
mutant is *killed* when they fail, *survives* when they pass, *timed out* past --timeout (counted
apart). Score = killed / (killed + survived), per module and overall. Before the mutants, each
module's tests run once on a null mutant (the module parsed and unparsed, unchanged in meaning): a
module whose tests fail there (e.g. because its file's hash changed) is skipped, not scored.

A surviving mutant is either a missing test or an equivalent mutant (one that computes the same
numbers, e.g. `<` for `<=` where the two sides are never equal); judge each by reading it, and
record the equivalent ones in EQUIVALENT with the reason (the summary marks them). What is mutated
and what has been judged live in scripts/mutation_targets.py.

Usage, from the repository root (results are written to OUT after each mutant and reused, so an
interrupted pass resumes where it stopped):

    BENCH_DATA_DIR=/path/to/data nice -n 15 .venv/bin/python scripts/mutation_pass.py OUT.json
        [--only bench/trainer.py,bench/report/stats.py]   only these modules
        [--sample N]                                      N AST mutants per module (a fixed sample
                                                          for the same source) plus every hand-written one
        [--timeout S]                                     seconds per mutant (default: 3x the
                                                          module's null run + 30)
        [--rerun-survivors OLD.json]                      only the mutants that survived in OLD.json
        [--list]                                          count the mutants per module and stop

Issue 8's pass is `--sample 10`: 153 mutants, about 25 minutes on 2 cores at load 3-4 (a killed
mutant stops at its first failing test; a survivor runs its module's tests in full, 5-25 s). Every
mutant (`--sample 0`) is about 590. The copy of the repository lives in a temporary folder, deleted
at the end; nothing in the repository is changed. Needs no network; the tests read BENCH_DATA_DIR's
data as the test suite does.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mutation_targets import EQUIVALENT, HAND, TARGETS, Hand  # beside this script (sys.path[0])

ROOT = Path(__file__).resolve().parents[1]
NICE = 15  # niceness of every test run: the pass shares the machine with real training
STATUSES = ("killed", "survived", "timeout")

SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
        ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Is: ast.IsNot,
        ast.IsNot: ast.Is, ast.And: ast.Or, ast.Or: ast.And, ast.In: ast.NotIn, ast.NotIn: ast.In}
NAMES = {"max": "min", "min": "max", "any": "all", "all": "any"}  # (True and False are constants)


@dataclass(frozen=True)
class Mutant:
    key: str  # module:function:line:what (AST: #index within the function)
    module: str
    apply: Callable[[str], str]  # module source -> mutated source


# ---- AST mutants ---------------------------------------------------------------------------------
def _functions(tree: ast.Module, wanted: list[str]):
    """(name, node) of the wanted top-level functions and Class.methods."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and f"{node.name}.{item.name}" in wanted:
                    yield f"{node.name}.{item.name}", item
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in wanted:
            yield node.name, node


def _skipped(fn: ast.AST) -> set[int]:
    """Nodes not worth mutating: docstrings, decorators, annotations, the messages of raised errors."""
    skip: set[int] = set()
    for node in ast.walk(fn):
        parts: list[ast.AST] = []
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            parts = [node]
        elif isinstance(node, ast.Raise) and node.exc is not None:
            parts = [node.exc]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            parts = [*node.decorator_list, *(a.annotation for a in ast.walk(node.args) if isinstance(a, ast.arg)
                                               and a.annotation), *([node.returns] if node.returns else [])]
        elif isinstance(node, ast.AnnAssign):
            parts = [node.annotation]
        elif isinstance(node, ast.JoinedStr):
            parts = [node]
        for part in parts:
            skip.update(id(n) for n in ast.walk(part))
    return skip


def _sites(fn: ast.AST) -> list[tuple[int, str, ast.AST, object]]:
    """(line, description, node, how) for every one-node mutation inside `fn`, in ast.walk order."""
    out, skip = [], _skipped(fn)
    for node in ast.walk(fn):
        if id(node) in skip:
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.BinOp, ast.AugAssign, ast.BoolOp)) and type(node.op) in SWAP:
            out.append((line, f"{type(node.op).__name__}->{SWAP[type(node.op)].__name__}", node, "op"))
        elif isinstance(node, ast.Compare):
            out += [(line, f"{type(op).__name__}->{SWAP[type(op)].__name__}", node, ("cmp", i))
                    for i, op in enumerate(node.ops) if type(op) in SWAP]
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            out.append((line, f"{node.value}->{not node.value}", node, "not"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            out.append((line, f"const {node.value!r}->{node.value + 1!r}", node, "inc"))
            if node.value != 0:
                out.append((line, f"const {node.value!r}->0", node, "zero"))
        elif isinstance(node, ast.Name) and node.id in NAMES and isinstance(node.ctx, ast.Load):
            out.append((line, f"{node.id}->{NAMES[node.id]}", node, "name"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
            out.append((line, f"drop {type(node.op).__name__}", node, "unary"))
        elif isinstance(node, ast.keyword) and node.arg == "ddof":
            out.append((line, "ddof->other", node, "ddof"))
    return out


def _mutate(node: ast.AST, how: object, parents: dict[int, ast.AST]) -> None:
    if how == "op":
        node.op = SWAP[type(node.op)]()
    elif isinstance(how, tuple):
        node.ops[how[1]] = SWAP[type(node.ops[how[1]])]()
    elif how == "inc":
        node.value = node.value + 1
    elif how == "zero":
        node.value = 0
    elif how == "not":
        node.value = not node.value
    elif how == "name":
        node.id = NAMES[node.id]
    elif how == "ddof":
        node.value = ast.Constant(0 if getattr(node.value, "value", 1) else 1)
    elif how == "unary":  # replace the UnaryOp by its operand in its parent
        parent = parents[id(node)]
        for field, value in ast.iter_fields(parent):
            if value is node:
                setattr(parent, field, node.operand)
            elif isinstance(value, list):
                setattr(parent, field, [node.operand if v is node else v for v in value])


def _ast_mutant(module: str, function: str, wanted: list[str], index: int, line: int, desc: str) -> Mutant:
    def apply(source: str) -> str:
        tree = ast.parse(source)
        fn = dict(_functions(tree, wanted))[function]
        _, _, node, how = _sites(fn)[index]
        _mutate(node, how, {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)})
        return ast.unparse(tree)

    return Mutant(f"{module}:{function}:{line}:{desc}#{index}", module, apply)


def _hand_mutant(h: Hand) -> Mutant:
    def apply(source: str) -> str:
        if source.count(h.old) != 1:
            raise LookupError(f"hand mutation {h.name!r}: its text occurs {source.count(h.old)} times in "
                              f"{h.module}, not once; update HAND in mutation_targets.py")
        return source.replace(h.old, h.new)

    return Mutant(f"{h.module}:{h.function}:hand:{h.name}", h.module, apply)


def mutants(root: Path, module: str, sample: int) -> list[Mutant]:
    """The module's AST mutants (a fixed sample of `sample` when > 0) and its hand-written ones."""
    wanted = TARGETS[module][0]
    tree = ast.parse((root / module).read_text())
    found = dict(_functions(tree, wanted))
    missing = [w for w in wanted if w not in found]
    if missing:
        raise LookupError(f"{module}: no function {', '.join(missing)}; update TARGETS in mutation_targets.py")
    sites = [(name, i, line, desc) for name, fn in found.items() for i, (line, desc, _, _) in enumerate(_sites(fn))]
    if 0 < sample < len(sites):
        sites = random.Random(module).sample(sites, sample)  # seeded by the module: the same sample each run
    out = [_ast_mutant(module, name, wanted, i, line, desc) for name, i, line, desc in sites]
    return out + [_hand_mutant(h) for h in HAND if h.module == module]


# ---- running -------------------------------------------------------------------------------------
def _copy_tree(root: Path, work: Path) -> None:
    shutil.copytree(root, work, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", ".bench_cache", "*.egg-info"))


def _run_tests(work: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    """("killed" | "survived" | "timeout", seconds) of `pytest -x -q tests` in `work`."""
    def lower_priority():
        os.nice(max(0, NICE - os.nice(0)))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    try:
        run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                              *[f"tests/{t}" for t in tests]], cwd=work, capture_output=True, text=True,
                             timeout=timeout, env=env, preexec_fn=lower_priority)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0
    return ("killed" if run.returncode else "survived"), time.perf_counter() - t0


def _check_imports(work: Path) -> None:
    """RuntimeError unless `import bench` in the copy imports the copy (an editable install elsewhere
    must not shadow it: the mutants would never run)."""
    found = subprocess.run([sys.executable, "-c", "import bench; print(bench.__file__)"], cwd=work,
                           capture_output=True, text=True).stdout.strip()
    if not found.startswith(str(work)):
        raise RuntimeError(f"import bench in the copy {work} imports {found or 'nothing'}; run with the "
                           "repository's interpreter, from a tree without an editable install shadowing it")


def _null_source(source: str) -> str:
    return ast.unparse(ast.parse(source))


def run_module(root: Path, work: Path, module: str, todo: list[Mutant], results: dict, out: Path,
               timeout: float | None) -> None:
    tests = [t for t in TARGETS[module][1] if (root / "tests" / t).exists()]
    source = (root / module).read_text()
    (work / module).write_text(_null_source(source))
    null, seconds = _run_tests(work, tests, 1800)
    if null != "survived":
        print(f"SKIPPED {module}: its tests fail on the unchanged (re-formatted) module; fix them first", flush=True)
        (work / module).write_text(source)
        return
    limit = timeout or 3 * seconds + 30
    print(f"{module}: {len(todo)} mutants, null run {seconds:.0f} s, timeout {limit:.0f} s ({', '.join(tests)})",
          flush=True)
    for m in todo:
        (work / module).write_text(m.apply(source))  # LookupError: a hand mutation's text moved
        status, seconds = _run_tests(work, tests, limit)
        results[m.key] = {"status": status, "seconds": round(seconds, 1)}
        out.write_text(json.dumps(results, indent=1))
        print(f"{status.upper():9} {m.key}", flush=True)
    (work / module).write_text(source)


def summary(results: dict) -> str:
    """A Markdown table: per module, mutants tried, killed, survived, timed out and the score."""
    rows: dict[str, dict[str, int]] = {}
    for key, r in results.items():
        rows.setdefault(key.split(":", 1)[0], dict.fromkeys(STATUSES, 0))[r["status"]] += 1
    rows["total"] = {k: sum(r[k] for r in rows.values()) for k in STATUSES}
    lines = ["| module | tried | killed | survived | timed out | score |", "| --- | --- | --- | --- | --- | --- |"]
    for module, r in rows.items():
        scored = r["killed"] + r["survived"]
        score = f"{r['killed'] / scored:.0%}" if scored else "-"
        lines.append(f"| {module} | {sum(r.values())} | {r['killed']} | {r['survived']} | {r['timeout']} | {score} |")
    survivors = [k for k, r in results.items() if r["status"] == "survived"]
    judged = [k for k in survivors if k in EQUIVALENT]
    r = rows["total"]
    lines += ["", f"survived ({len(survivors)}; {len(judged)} judged equivalent, see EQUIVALENT; score without "
                  f"them {r['killed']}/{r['killed'] + r['survived'] - len(judged)}):"]
    return "\n".join(lines + [k + (f"  (equivalent: {EQUIVALENT[k]})" if k in EQUIVALENT else "") for k in survivors])


def _plan(root: Path, modules: list[str], sample: int, previous: Path | None) -> dict[str, list[Mutant]]:
    """module -> its mutants; with `previous` (an earlier OUT), only those that survived there."""
    survivors = None
    if previous is not None:
        survivors = {k for k, r in json.loads(previous.read_text()).items() if r["status"] == "survived"}
    plan = {module: mutants(root, module, sample) for module in modules}
    if survivors is not None:
        plan = {module: [m for m in todo if m.key in survivors] for module, todo in plan.items()}
    return plan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path, help="results JSON (mutant key -> status, seconds); resumed when it exists")
    p.add_argument("--only", default="", help="comma-separated modules (paths as in TARGETS)")
    p.add_argument("--sample", type=int, default=0, help="AST mutants per module; 0 = all")
    p.add_argument("--timeout", type=float, default=None, help="seconds per mutant")
    p.add_argument("--rerun-survivors", type=Path, default=None, help="a previous OUT: run only its survivors")
    p.add_argument("--root", type=Path, default=ROOT, help="the repository to mutate (default: this one)")
    p.add_argument("--list", action="store_true", help="count the mutants per module and stop")
    args = p.parse_args(argv)
    only = [m for m in args.only.split(",") if m]
    unknown = [m for m in only if m not in TARGETS]
    if unknown:
        p.error(f"--only: unknown module(s) {', '.join(unknown)}; valid: {', '.join(TARGETS)}")
    plan = _plan(args.root, only or list(TARGETS), args.sample, args.rerun_survivors)
    if args.list:
        for module, todo in plan.items():
            print(f"{len(todo):4} {module}")
        print(f"{sum(map(len, plan.values())):4} in all")
        return 0
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    with tempfile.TemporaryDirectory(prefix="mutation_pass.") as tmp:
        work = Path(tmp) / "tree"
        _copy_tree(args.root, work)
        _check_imports(work)
        for module, todo in plan.items():
            todo = [m for m in todo if m.key not in results]
            if todo:
                run_module(args.root, work, module, todo, results, args.out, args.timeout)
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
