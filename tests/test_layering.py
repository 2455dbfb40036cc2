"""The hooks' import path stays stdlib-only, and no stage imports a later one."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "claude_rl"
# Modules the capture hooks import on every tool call of Claude Code.
HOOK_MODULES = ("paths", "redact", "capture", "transcript_copy")
# Pipeline order; a module may import only from its own stage or earlier ones.
STAGES = [
    {"paths", "redact", "capture", "transcript_copy"},
    {"schema", "store", "hook_settings", "tools", "chat_format", "base_model"},
    {"episodes", "status", "samples"},
    # scorers: plain functions of (reference, candidate) episodes, shared by eval and the RL reward
    {"scoring"},
    {"dataset"},
    {"train"},
    {"export"},
    {"runtime"},
    {"evaluate"},
    {"cli", "__main__"},
]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "claude_rl":  # from claude_rl import paths, __version__
                found |= {f"claude_rl.{a.name}" for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
    return found


def test_hook_modules_import_only_the_standard_library():
    for name in HOOK_MODULES:
        for module in imports_of(PACKAGE / f"{name}.py"):
            top = module.split(".")[0]
            if top == "claude_rl" and module != "claude_rl":
                assert module.split(".")[1] in HOOK_MODULES, (name, module)
            # orjson and ahocorasick are optional accelerators, imported under try/except ImportError
            elif top not in ("orjson", "ahocorasick", "claude_rl"):
                assert top in sys.stdlib_module_names, (name, module)


def test_hook_runs_without_site_packages():
    """`python3 -S` hides pydantic and friends: importing the capture path must still work."""
    code = (
        "import claude_rl.capture, claude_rl.transcript_copy, sys; "
        "assert 'pydantic' not in sys.modules; assert 'typer' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=PACKAGE.parent, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


def test_no_stage_imports_a_later_stage():
    stage_of = {name: i for i, names in enumerate(STAGES) for name in names}
    for path in PACKAGE.rglob("*.py"):
        # a subpackage (claude_rl/episodes/...) is one stage, named after its folder
        name = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if name == "__init__":
            continue
        assert name in stage_of, f"{name} is missing from STAGES"
        for module in imports_of(path):
            parts = module.split(".")
            if parts[0] == "claude_rl" and len(parts) > 1:
                assert stage_of[parts[1]] <= stage_of[name], f"{path} imports {module}"
