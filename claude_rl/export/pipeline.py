"""``export_gguf``: a trained run (or any HF Llama folder) → GGUF files, Modelfile, export.json.

Everything is written into a temporary folder beside the output folder and renamed into place
only when the whole export, parity checks included, succeeded: a failed export leaves no output
folder behind (and an earlier successful export in that place stays as it was).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from claude_rl import paths
from claude_rl.export import convert, modelfile, quantize, source, tokenizer_meta
from claude_rl.export.errors import ExportError, ExportParityError

REPORT = "export.json"
DEFAULT_QUANTS = ("q8_0",)


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    gguf: Path  # the full-precision file (F16 by default)
    quants: dict[str, Path]  # quantization name → file
    modelfile: Path
    report_path: Path
    report: dict[str, Any] = field(repr=False)

    @property
    def files(self) -> list[Path]:
        return [self.gguf, *self.quants.values()]


def full_file_name(stem: str, outtype: str) -> str:
    """``<stem>.gguf`` for F16 (the default), ``<stem>-bf16.gguf`` / ``<stem>-f32.gguf`` otherwise."""
    return f"{stem}.gguf" if outtype == "f16" else f"{stem}-{outtype}.gguf"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("claude-rl", "gguf", "llama-cpp-python", "transformers", "torch", "peft", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _default_out_dir(model: Path) -> Path:
    """Where ``export_gguf`` writes when no out_dir is given (known before any merge happens)."""
    folder = Path(model).expanduser()
    if folder.name == source.MERGED and source.is_run_folder(folder.parent):
        folder = folder.parent
    return folder / "gguf"


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the finished ``tmp`` folder to ``out_dir``, replacing an earlier export there."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".old-{out_dir.name}-{os.getpid()}")
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_gguf(
    model: Path | str | None = None,
    out_dir: Path | str | None = None,
    quants: Sequence[str] | str | None = DEFAULT_QUANTS,
    outtype: str = "f16",
    check_parity: bool = True,
    *,
    home: Path | str | None = None,
    pre_tokenizer: str | None = None,
    tolerance: float | None = None,
    greedy_tokens: int | None = None,
    _chat_template: str | None = None,
    _permute_qk: bool = True,
) -> ExportResult:
    """Convert ``model`` (a run folder or a run's name under ``<home>/models``, a run's ``merged/``,
    or an HF Llama folder; default: the newest ``llama-claude-*-vN`` run under ``home``) to GGUF in
    ``out_dir`` (default ``<run>/gguf/``): the ``outtype`` file (f16, bf16 or f32), one file per
    quantization in ``quants``, an Ollama ``Modelfile`` and ``export.json``.

    With ``check_parity`` (the default) the files are compared with transformers on fixed prompts
    (``claude_rl.export.parity``); a file that fails raises ``ExportParityError`` with the numbers
    and nothing is written. ``pre_tokenizer`` overrides the llama.cpp pre-tokenizer name for a
    tokenizer this module does not recognize. ``_chat_template`` and ``_permute_qk`` break the
    export on purpose; they exist for the tests that prove the parity check catches it.
    """
    started = time.monotonic()
    quant_names = quantize.normalize_quants(quants)
    if outtype not in convert.OUTTYPES:
        raise ExportError(f"unknown outtype {outtype!r}: choose one of {', '.join(convert.OUTTYPES)}")
    # a folder, or a run's name under <home>/models as eval, control and probe take it
    found = [source.latest_model(home)] if model is None else paths.run_candidates(model, home)
    model_path = next((c for c in found if c.is_dir()), None)
    if model_path is None:
        under = f" here or under {paths.models_dir(home)}" if len(found) > 1 else ""
        raise ExportError(f"{model}: no such model folder{under}")
    out = Path(out_dir).expanduser() if out_dir is not None else _default_out_dir(model_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        report = _export_into(
            tmp,
            model_path,
            quant_names,
            outtype,
            check_parity,
            pre_tokenizer=pre_tokenizer,
            tolerance=tolerance,
            greedy_tokens=greedy_tokens,
            chat_template=_chat_template,
            permute=_permute_qk,
        )
        report["out_dir"] = str(out)
        report["duration_s"]["total"] = round(time.monotonic() - started, 1)
        (tmp / REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(
        out_dir=out,
        gguf=out / report["files"][outtype]["file"],
        quants={q: out / report["files"][q]["file"] for q in quant_names},
        modelfile=out / modelfile.MODELFILE,
        report_path=out / REPORT,
        report=report,
    )


def _export_into(
    tmp: Path,
    model: Path,
    quant_names: list[str],
    outtype: str,
    check_parity: bool,
    *,
    pre_tokenizer: str | None,
    tolerance: float | None,
    greedy_tokens: int | None,
    chat_template: str | None,
    permute: bool,
) -> dict[str, Any]:
    durations: dict[str, float] = {}
    t0 = time.monotonic()
    src = source.resolve(model, tmp / ".scratch")
    durations["resolve"] = round(time.monotonic() - t0, 1)

    hp = convert.LlamaHparams.from_config(convert.read_config(src.hf_dir))
    tok_meta = tokenizer_meta.build(
        src.hf_dir, hp.vocab_size, pre_tokenizer=pre_tokenizer, chat_template=chat_template
    )
    full = tmp / full_file_name(src.name, outtype)
    t0 = time.monotonic()
    summary = convert.write_gguf(src.hf_dir, full, tok_meta, name=src.name, outtype=outtype, permute=permute)
    durations["convert"] = round(time.monotonic() - t0, 1)

    checker = None
    if check_parity:
        from claude_rl.export.parity import GREEDY_TOKENS, TOLERANCE, ParityChecker

        t0 = time.monotonic()
        checker = ParityChecker(
            src.hf_dir,
            tok_meta.fmt,
            tolerance if tolerance is not None else TOLERANCE[outtype],
            greedy_tokens if greedy_tokens is not None else GREEDY_TOKENS,
        )
        # Gate the full-precision file before spending time on quantization.
        if checker.check_full(full, outtype):
            raise ExportParityError(checker.failures, checker.report())
        durations["parity_full"] = round(time.monotonic() - t0, 1)

    files: dict[str, dict[str, Any]] = {outtype: {"file": full.name}}
    for q in quant_names:
        t0 = time.monotonic()
        path = tmp / f"{src.name}-{q}.gguf"
        quantize.quantize(full, path, q)
        durations[f"quantize_{q}"] = round(time.monotonic() - t0, 1)
        files[q] = {"file": path.name}
        if checker is not None:
            t0 = time.monotonic()
            checker.check_quant(path, q)
            durations[f"parity_{q}"] = round(time.monotonic() - t0, 1)
    if checker is not None and checker.failures:
        raise ExportParityError(checker.failures, checker.report())
    if checker is not None:
        del checker.model  # the HF model is no longer needed: free its memory before hashing files

    for entry in files.values():
        path = tmp / entry["file"]
        entry.update(bytes=path.stat().st_size, sha256=_sha256(path))

    # Ollama gets the smallest file asked for: the first quantization, else the full file.
    served = files[quant_names[0]]["file"] if quant_names else full.name
    (tmp / modelfile.MODELFILE).write_text(
        modelfile.modelfile_text(served, tok_meta.fmt, hp.context_length), encoding="utf-8"
    )
    shutil.rmtree(tmp / ".scratch", ignore_errors=True)

    manifest = src.manifest or {}
    return {
        "name": src.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "model": str(model),
            "run_dir": str(src.run_dir) if src.run_dir else None,
            "hf_dir": "merged from adapter/ into a scratch folder (removed)"
            if src.merged_from_adapter
            else str(src.hf_dir),
            "merged_from_adapter": src.merged_from_adapter,
            "base_model": manifest.get("base_model"),
            "phase": manifest.get("phase"),
        },
        "outtype": outtype,
        "files": files,
        "modelfile": {"file": modelfile.MODELFILE, "from": served},
        "tokenizer": {
            "chat_format": tok_meta.fmt,
            "pre_tokenizer": tok_meta.pre,
            "add_bos_token": tok_meta.add_bos,
            "eos_token_id": tok_meta.eos_id,
            "bos_token_id": tok_meta.bos_id,
            "chat_template_sha256": hashlib.sha256(tok_meta.chat_template.encode()).hexdigest(),
        },
        "conversion": summary,
        "parity": checker.report() if checker is not None else {"skipped": True},
        "versions": _versions(),
        "duration_s": durations,
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few lines for a terminal: where the files are, their sizes, and the parity numbers."""
    out_dir = Path(report.get("out_dir", "."))
    lines = [f"GGUF export of {report['name']} → {out_dir}"]
    parity = report.get("parity") or {}
    for label, entry in report["files"].items():
        line = f"  {entry['file']}  {entry['bytes'] / 1e6:.1f} MB"
        n = (parity.get("files") or {}).get(label)
        if n:
            line += (
                f"  max|Δlogit| {n['max_abs_dlogit']}  top-1 {n['top1_agree']}/{n['positions']}"
                f"  KL {n['mean_kl']}  greedy {n['greedy_equal']}/{n['greedy_total']} equal"
                f" ({n['gate']} gate)"
            )
        lines.append(line)
    if parity.get("skipped"):
        lines.append("  parity checks skipped")
    elif parity:
        template = parity.get("template") or {}
        lines.append(
            f"  chat template: {sum(c['equal'] for c in template.get('conversations', []))}/"
            f"{len(template.get('conversations', []))} conversations tokenize identically in llama.cpp"
        )
    lines.append(f"  Ollama: ollama create {report['name']} -f {out_dir / report['modelfile']['file']}")
    return lines
