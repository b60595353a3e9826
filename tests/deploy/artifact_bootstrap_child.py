"""Lambda's part in the artifact test, run by a bare interpreter that sees only
the unzipped package (``tools.package.lambda_python``)::

    python -S -s -P artifact_bootstrap_child.py app.app < events.json

Imports the handler as Lambda's bootstrap does, answers each event of the JSON
list on stdin, and prints one JSON object: the answers, and every module that
came from outside the package and the standard library, every module of the
package imported without its bytecode (both must be none), and the top-level
packages imported.
"""

import importlib
import json
import os
import sys
import sysconfig
from types import SimpleNamespace


def main() -> None:
    module_name, _, attribute = sys.argv[1].rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)
    answers = []
    for number, event in enumerate(json.load(sys.stdin)):
        context = SimpleNamespace(
            aws_request_id=f"artifact-{number}",
            function_name=sys.argv[1],
            memory_limit_in_mb=2048,
            get_remaining_time_in_millis=lambda: 900_000,
        )
        answers.append(handler(event, context))
    # This script is the bootstrap's stand-in: it may come from elsewhere.
    allowed = [
        __file__,
        *os.environ["PYTHONPATH"].split(os.pathsep),
        sysconfig.get_path("stdlib"),
    ]
    files = {
        name: getattr(module, "__file__", None) for name, module in sys.modules.items()
    }
    foreign = sorted(
        name
        for name, file in files.items()
        if file is not None and not file.startswith(tuple(allowed))
    )
    compiled_at_import = sorted(
        name
        for name, module in sys.modules.items()
        if str(getattr(module, "__file__", "")).startswith(tuple(allowed[1:-1]))
        and str(getattr(module, "__file__", "")).endswith(".py")
        and not os.path.exists(str(getattr(module, "__cached__", "")))
    )
    print(
        json.dumps(
            {
                "answers": answers,
                "foreign_modules": foreign,
                "compiled_at_import": compiled_at_import,
                "packages": sorted({name.split(".")[0] for name in sys.modules}),
            }
        )
    )


if __name__ == "__main__":
    main()
