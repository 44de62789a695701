#!/usr/bin/env python3
"""Build app.py into the WebAssembly component dist/{{crate}}.wasm for the WIT world
weir:function/handler in wit/, with componentize-py {{componentize_py}}.

componentize-py is installed into the virtualenv .venv on first use; set COMPONENTIZE_PY
to the path of a componentize-py {{componentize_py}} to use that one instead.
"""

import os
import subprocess
import sys
import venv
from pathlib import Path

VERSION = "{{componentize_py}}"
HERE = Path(__file__).resolve().parent


def componentize_py() -> str:
    given = os.environ.get("COMPONENTIZE_PY")
    if given:
        return given
    env = HERE / ".venv"
    binary = env / "bin" / "componentize-py"
    try:
        installed = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        installed = None
    if installed != f"componentize-py {VERSION}":
        if not (env / "bin" / "python").exists():
            venv.create(env, with_pip=True)
        subprocess.run(
            [env / "bin" / "python", "-m", "pip", "install", "--quiet",
             f"componentize-py=={VERSION}"],
            check=True,
        )
    return str(binary)


def main() -> int:
    output = HERE / "dist" / "{{crate}}.wasm"
    output.parent.mkdir(exist_ok=True)
    result = subprocess.run(
        [componentize_py(), "-d", HERE / "wit", "-w", "weir:function/handler",
         "componentize", "app", "-o", output],
        cwd=HERE,
    )
    if result.returncode == 0:
        print(f"built {output}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
