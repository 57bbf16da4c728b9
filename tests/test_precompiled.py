"""A second process loads the compiled fit from disk: no tracing, the same numbers."""

import json
import os
import subprocess
import sys

SCRIPT = """
import json, jaxhlm
df = jaxhlm.datasets.load("sleepstudy")
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit()
again = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit(reml=False)
print(json.dumps({"traces": jaxhlm.trace_count(), "objective": res.objective, "theta": list(res.theta),
                  "ml": again.objective}))
"""


def _run(cache):
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_compiled_fit(tmp_path):
    first = _run(tmp_path)
    stored = sorted(p.name for p in (tmp_path / "jaxhlm-executables").iterdir())
    assert first["traces"] == 2 and len(stored) == 2  # REML and ML: two programs
    second = _run(tmp_path)
    assert second["traces"] == 0
    assert second == {**first, "traces": 0}  # bit for bit
    assert abs(first["objective"] - 1743.6282719585) < 1e-6


def test_unreadable_file_means_a_normal_compilation(tmp_path):
    _run(tmp_path)
    for p in (tmp_path / "jaxhlm-executables").iterdir():
        p.write_bytes(b"not a pickle")
    again = _run(tmp_path)
    assert again["traces"] == 2
    assert abs(again["objective"] - 1743.6282719585) < 1e-6
