"""The workload catalogue (issue 13): every workload's CI-sized cases against their goldens, on a
device and on the sequential engine, and the commands that list and run them. The scene tests of the
newer API are run (in three modes) by tests/test_newapi.py; the big cases by ``ptoemu list
--counts`` (task counts, by running the orchestrations dry) and ``ptoemu run NAME --case Case1``.
"""

from __future__ import annotations

import pytest

from host.cli import main
from host.run import count_tasks, listing
from host.run import run as run_workload
from kernels.workloads import catalogue

NOT_SCENES = [n for n, m in catalogue.MODULES.items() if not m.startswith("kernels.workloads.scenes.")]
SMALL = [(n, c) for n in NOT_SCENES for c in catalogue.load(n).cases if c not in catalogue.load(n).big]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("inline", [False, True], ids=["device", "inline"])
@pytest.mark.parametrize("name,case", SMALL, ids=[f"{n}-{c}" for n, c in SMALL])
def test_small_cases_match_their_goldens(name, case, inline):
    rows = run_workload(name, case, "all", blocks=4, inline=inline, progress=False, log=lambda s: None)
    bad = [(r["variant"], r.get("max_abs"), r.get("problems")) for r in rows if not r.get("pass", True)]
    assert rows and not bad, bad
    assert all(r["tasks"] > 0 for r in rows)


@pytest.mark.timeout(60)
def test_every_workload_is_listed_with_its_cases():
    text = listing()
    for name in catalogue.names():
        wl = catalogue.load(name)
        assert f"{wl.name}: " in text
        assert all(f"  {c}:" in text for c in wl.cases)


@pytest.mark.timeout(60)
def test_dry_counts_equal_what_a_run_submits():
    # the dry inline device counts the tasks the orchestration submits, without running kernels
    wl = catalogue.load("paged_attention_unroll")
    rows = run_workload("paged_attention_unroll", "mixed_lens", "first_output", blocks=2, progress=False,
                        log=lambda s: None)
    assert count_tasks(wl, "mixed_lens", "first_output") == rows[0]["tasks"]


@pytest.mark.timeout(120)
def test_run_and_list_commands(capsys):
    assert main(["run", "vector_example", "--blocks", "2"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "5 worker tasks" in out
    assert main(["list"]) == 0
    assert "paged_attention_unroll" in capsys.readouterr().out
    for argv, flag in ((["run", "vector_example", "--case", "nope"], "--case"),
                       (["run", "vector_example", "--variant", "nope"], "--variant"),
                       (["run", "no_such_workload"], "WORKLOAD")):
        with pytest.raises(SystemExit) as ei:
            main(argv)
        assert ei.value.code == 2 and flag in capsys.readouterr().err
