"""Free-threaded CPython: the core declares that it runs without the GIL (`gil_used = false`),
so importing nova leaves the GIL off; on a GIL build nothing changes."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def test_importing_nova_leaves_the_gil_as_the_interpreter_has_it() -> None:
    code = (
        "import sys, warnings; warnings.simplefilter('error'); import nova, nova._core; nova.Event('a'); "
        "print(getattr(sys, '_is_gil_enabled', lambda: True)())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == str(not FREE_THREADED), out.stderr
