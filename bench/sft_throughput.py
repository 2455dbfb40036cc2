"""SFT step throughput: tokens/s, peak memory and MFU of our LoRA SFT step, Llama-3.1-8B shape.

Usage: ``make bench-sft`` on a GPU machine (``bash bench/gpu/run_sft_bench.sh`` there), or
``TINY=1 python bench/sft_throughput.py`` anywhere (tiny model, CPU, < 60 s: a smoke test).

Random bf16 weights (``LlamaForCausalLM._from_config``, nothing downloaded): same FLOPs as the real
model. LoRA r=16 on all seven linear layers of every decoder layer, as in ``../shared/gpu/anchor_sft.py``.
MFU counts 4·N FLOP per token (N = 8.03e9, the anchor's convention) against ``PEAK_TFLOPS`` (790).

The first row re-measures the anchor's setting A in this run, on this card (packed rows of 8,192,
full gradient checkpointing, sdpa, PEFT's default fp32 adapters, labels=input_ids through
``model(...)``); every other row is compared with it. Our step ("ours"):
  * Liger kernels (RMSNorm, SwiGLU, RoPE) and fused linear+cross-entropy on ``lm_head.weight``:
    the decoder's hidden states go straight into the loss, logits are never materialized
    (without liger-kernel: a chunked, recomputed cross-entropy in plain torch);
  * packing with document masking: position ids restart per document and attention never crosses
    a document (``ATTN=auto``: flash varlen attention through ``torch.nn.attention.varlen`` or
    ``aten._flash_attention_forward`` with cu_seqlens, checked against per-document attention at
    start-up; else one sdpa call per document; ``fast-flex`` uses transformers' flex_attention);
    labels are shifted inside each document (no loss across document boundaries);
  * LoRA in bf16 compute with fp32 master weights (autocast; PEFT's cast of every linear input
    to fp32 switched off): about half the activation memory of the baseline, so less
    checkpointing is needed; ``LORA_PREC=fp32`` keeps PEFT's default, ``bf16`` casts adapters;
  * gradient checkpointing off, or on every k-th decoder layer (selective).

Configurations (``CONFIGS=a,b,...`` picks and orders them; default order below, core ones first):
  baseline      anchor A: packed 8192, full checkpointing, sdpa, HF loss
  fast          ours, rows of 4096 x micro-batch 2 (8192 tokens/step), no checkpointing
  selective     ours, rows of 8192, checkpointing on every 2nd layer
  long          ours, rows of 16384, full checkpointing (must not OOM)
  fast-mb1      ours, rows of 4096 x 1, no checkpointing (fallback if ``fast`` runs out of memory)
  qlora         ours on a 4-bit NF4 base (bitsandbytes), rows of 8192, full checkpointing
  fast-compile  ``fast`` with torch.compile on each decoder layer (only with COMPILE=1)
  fast-flex     ``fast`` with transformers' flex_attention (block mask from packed position ids)
The bf16 base model is built once and shared; QLoRA frees it and builds a 4-bit one layer by layer;
the extras after it rebuild the bf16 model. Each configuration catches OOM and reports it. A config
starts only if BUDGET_S leaves its estimate (QLoRA's 60 s held back for it); compile/flex
time counts in warm-up, not in tokens/s. CPU: flex (no backward there) and compile are skipped.

Environment: TINY=1, CONFIGS, COMPILE=1, ATTN=auto|varlen|doc-loop|sdpa|flex_attention,
LORA_PREC=autocast|fp32|bf16, STEPS (timed steps, default 6), WARM (default 2 baseline / 3 ours),
TIME_CAP_S (per timed loop, 30), BUDGET_S (whole run, 420: later configs are skipped),
PEAK_TFLOPS (790), OUT (writes $OUT/sft_bench.json), FAST_ROWS/FAST_MB, SEL_EVERY, LONG_ROWS,
LONG_GC_EVERY, QLORA_ROWS, NO_LIGER=1.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
import traceback
from contextlib import nullcontext

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
T_START = time.time()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TINY = bool(os.environ.get("TINY")) or DEV == "cpu"  # no 8B model on a CPU: the smoke test instead
N_PARAMS = 8.03e9
PEAK = float(os.environ.get("PEAK_TFLOPS", "790")) * 1e12
BUDGET_S = float(os.environ.get("BUDGET_S", "420"))
TIME_CAP_S = float(os.environ.get("TIME_CAP_S", "30"))
STEPS = int(os.environ.get("STEPS", "2" if TINY else "6"))
SCALE = 32 if TINY else 1  # TINY divides every row length and document length by this
LORA_PREC = os.environ.get("LORA_PREC", "autocast")
LORA = dict(
    r=16,
    lora_alpha=32,
    lora_dropout=0.0,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    task_type="CAUSAL_LM",
)
NOTES: list[str] = []  # fallbacks taken, printed at the end


def log(*a):
    print(*a, flush=True)


def note(msg):
    NOTES.append(msg)
    log("NOTE:", msg)


def elapsed():
    return time.time() - T_START


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def free():
    gc.collect()
    if DEV == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gib(x):
    return round(x / 2**30, 1)


import peft  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


def model_config():
    if TINY:
        c = LlamaConfig(
            vocab_size=1000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    else:
        c = LlamaConfig(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        )
    c._attn_implementation = "sdpa"
    c.use_cache = False
    return c


CFG = model_config()

# ---------------------------------------------------------------------------------------------
# optional packages: Liger kernels, bitsandbytes
# ---------------------------------------------------------------------------------------------
LIGER = None
if not os.environ.get("NO_LIGER"):
    try:
        import liger_kernel
        from liger_kernel.transformers import apply_liger_kernel_to_llama
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        LIGER = dict(
            apply=apply_liger_kernel_to_llama,
            lce=LigerFusedLinearCrossEntropyLoss,
            version=getattr(liger_kernel, "__version__", "?"),
        )
    except Exception as e:  # no triton on CPU machines, or not installed
        note(
            f"liger-kernel unavailable ({type(e).__name__}: {str(e)[:80]}): "
            "fallback = HF RMSNorm/SwiGLU/RoPE and a chunked, recomputed torch cross-entropy"
        )
else:
    note("NO_LIGER=1: chunked torch cross-entropy, HF RMSNorm/SwiGLU/RoPE")
LIGER_APPLIED = False


def apply_liger(base):
    """Liger RMSNorm/SwiGLU/RoPE on this instance (and, for RoPE and models built later, globally)."""
    global LIGER_APPLIED
    if LIGER is None:
        return False
    LIGER["apply"](
        rope=True,
        rms_norm=True,
        swiglu=True,
        cross_entropy=False,
        fused_linear_cross_entropy=False,
        model=base,
    )
    LIGER_APPLIED = True
    return True


def bnb_module():
    try:
        import bitsandbytes as bnb

        return bnb, None
    except Exception as e:
        return None, f"{type(e).__name__}: {str(e)[:120]}"


# ---------------------------------------------------------------------------------------------
# data: lognormal document lengths (median 1,500, clipped to [256, 8192]) as in the anchor
# ---------------------------------------------------------------------------------------------
def lengths(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.exp(torch.randn(n, generator=g) * 0.8 + math.log(1500 / SCALE)).clamp(
        256 // SCALE, 8192 // SCALE
    )
    return x.long().tolist()


def packed_rows(T, n, seed=1):
    """n rows of T tokens; each row holds whole documents plus a truncated last one (the anchor's packing)."""
    L = lengths(n * 20, seed)
    g = torch.Generator().manual_seed(seed + 100)
    rows, k = [], 0
    for _ in range(n):
        docs, used = [], 0
        while used < T:
            ln = min(L[k % len(L)], T - used)
            k += 1
            docs.append(ln)
            used += ln
        rows.append((torch.randint(0, CFG.vocab_size, (T,), generator=g), docs))
    return rows


def baseline_batches(T, n):
    out = []
    for ids, docs in packed_rows(T, n):
        pos = torch.cat([torch.arange(d) for d in docs])
        out.append(dict(ids=ids[None].to(DEV), pos=pos[None].to(DEV), tokens=T))
    return out


def ours_batches(T, mb, n, attn, fixed_max=False):
    """Micro-batches of mb rows. For varlen/doc-loop attention the rows are laid end to end as one
    (1, mb*T) sequence (documents never cross a row, so this is the same computation); for
    sdpa/flex they stay (mb, T) and transformers builds the document mask from the position ids."""
    rows = packed_rows(T, n * mb)
    out = []
    for i in range(n):
        chunk = rows[i * mb : (i + 1) * mb]
        ids = torch.stack([r[0] for r in chunk])
        docs_per_row = [r[1] for r in chunk]
        pos = torch.stack([torch.cat([torch.arange(d) for d in docs]) for docs in docs_per_row])
        tgt = torch.full_like(ids, -100)
        tgt[:, :-1] = ids[:, 1:]
        tgt[:, :-1][pos[:, 1:] == 0] = -100  # last token of a document predicts nothing
        b = dict(tokens=mb * T)
        if attn in ("varlen", "doc-loop"):
            docs = [d for row in docs_per_row for d in row]
            cu = torch.tensor([0] + list(torch.tensor(docs).cumsum(0).tolist()), dtype=torch.int32)
            bounds, s = [], 0
            for d in docs:
                bounds.append((s, s + d))
                s += d
            mx = T if fixed_max else max(docs)  # a fixed bound keeps compiled graphs from specializing
            kw = dict(cu_seq_lens_q=cu.to(DEV), cu_seq_lens_k=cu.to(DEV), max_length_q=mx, max_length_k=mx)
            if ATTN_MODE["mode"] == "doc-loop":
                kw["doc_bounds"] = bounds
            b.update(ids=ids.reshape(1, -1), pos=pos.reshape(1, -1), tgt=tgt.reshape(1, -1), kw=kw)
        else:
            b.update(ids=ids, pos=pos, tgt=tgt, kw={})
        for k in ("ids", "pos", "tgt"):
            b[k] = b[k].to(DEV)
        out.append(b)
    return out


# ---------------------------------------------------------------------------------------------
# document-masked attention for packed rows: flash varlen (cu_seqlens) or one sdpa call per document
# ---------------------------------------------------------------------------------------------
VARLEN = dict(fn=None, name=None, gqa_native=True)


def _varlen_candidates():
    import inspect

    cands = []
    try:
        from torch.nn.attention.varlen import varlen_attn

        params = inspect.signature(varlen_attn).parameters

        def call_api(q, k, v, cu, mx, scale, enable_gqa):
            kw = {}
            if "is_causal" in params:
                kw["is_causal"] = True
            else:
                kw["window_size"] = (-1, 0)
            if "scale" in params:
                kw["scale"] = scale
            if enable_gqa and "enable_gqa" in params:
                kw["enable_gqa"] = True
            return varlen_attn(q, k, v, cu, cu, mx, mx, **kw)

        cands.append(("torch.nn.attention.varlen.varlen_attn", call_api))
    except Exception as e:
        log(f"varlen: torch.nn.attention.varlen unavailable ({type(e).__name__})")

    def call_aten(q, k, v, cu, mx, scale, enable_gqa):
        return torch.ops.aten._flash_attention_forward(
            q, k, v, cu, cu, mx, mx, 0.0, True, False, scale=scale
        )[0]

    cands.append(("aten._flash_attention_forward", call_aten))
    return cands


def _doc_ref(q, k, v, lens, scale):
    """Reference: (T, H, D) tensors, one causal sdpa per document."""
    outs, s = [], 0
    for ln in lens:
        qq, kk, vv = (t[s : s + ln].transpose(0, 1)[None] for t in (q, k, v))
        o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=scale, enable_gqa=True)
        outs.append(o[0].transpose(0, 1))
        s += ln
    return torch.cat(outs)


def probe_varlen():
    """Pick a flash varlen entry point whose forward and backward match per-document attention."""
    if DEV != "cuda":
        return "no CUDA"
    lens = [37, 300, 128, 63, 1]
    Hq, Hk, D = 8, 2, 128
    g = torch.Generator(device=DEV).manual_seed(0)
    T = sum(lens)
    mk = lambda h: torch.randn(T, h, D, device=DEV, dtype=torch.bfloat16, generator=g)  # noqa: E731
    q0, k0, v0, go = mk(Hq), mk(Hk), mk(Hk), mk(Hq)
    scale = D**-0.5
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=DEV)

    def run(fn):
        q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
        o = fn(q, k, v)
        (o.float() * go.float()).sum().backward()
        return [o.float(), q.grad.float(), k.grad.float(), v.grad.float()]

    ref = run(lambda q, k, v: _doc_ref(q, k, v, lens, scale))
    errs = []
    for name, call in _varlen_candidates():
        for native in (True, False):

            def fn(q, k, v, call=call, native=native):
                if not native:
                    k, v = k.repeat_interleave(Hq // Hk, dim=1), v.repeat_interleave(Hq // Hk, dim=1)
                return call(q, k, v, cu, max(lens), scale, native)

            try:
                got = run(fn)
                err = max(((a - b).norm() / b.norm()).item() for a, b in zip(got, ref, strict=True))
            except Exception as e:
                errs.append(f"{name}{'' if native else '+repeat_kv'}: {type(e).__name__}: {str(e)[:100]}")
                continue
            if err < 2e-2 and all(torch.isfinite(t).all() for t in got):
                VARLEN.update(fn=call, name=name + ("" if native else " + repeat_kv"), gqa_native=native)
                log(f"varlen probe: {VARLEN['name']} matches per-document sdpa (fwd+bwd rel err {err:.1e})")
                return None
            errs.append(f"{name}{'' if native else '+repeat_kv'}: rel err {err:.2e}")
    return "; ".join(errs)


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    """transformers attention function for packed rows: query (B, Hq, S, D) -> (B, S, Hq, D)."""
    B, Hq, S, D = query.shape
    Hk = key.shape[1]
    if ATTN_MODE["mode"] == "varlen":
        q = query.transpose(1, 2).reshape(B * S, Hq, D)
        k = key.transpose(1, 2).reshape(B * S, Hk, D)
        v = value.transpose(1, 2).reshape(B * S, Hk, D)
        if not VARLEN["gqa_native"] and Hk != Hq:
            k, v = k.repeat_interleave(Hq // Hk, dim=1), v.repeat_interleave(Hq // Hk, dim=1)
        o = VARLEN["fn"](q, k, v, kw["cu_seq_lens_q"], kw["max_length_q"], scaling, k.shape[1] != Hq)
        return o.view(B, S, Hq, D), None
    # doc-loop: one causal sdpa per document (B == 1: rows laid end to end). On CUDA the KV heads are
    # repeated so that sdpa's flash kernel stays eligible (GQA could send it to the math kernel).
    gqa = Hk != Hq
    if gqa and query.is_cuda:
        key, value = key.repeat_interleave(Hq // Hk, dim=1), value.repeat_interleave(Hq // Hk, dim=1)
        gqa = False
    outs = [
        F.scaled_dot_product_attention(
            query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True, scale=scaling, enable_gqa=gqa
        )
        for s, e in kw["doc_bounds"]
    ]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


ATTN_MODE = dict(mode=None)  # "varlen" | "doc-loop" for the custom attention function
CUSTOM_ATTN = "packed_docs"
try:
    from transformers import AttentionInterface
except ImportError:  # older layout
    from transformers.modeling_utils import AttentionInterface
AttentionInterface.register(CUSTOM_ATTN, varlen_attention_forward)


def choose_attn():
    want = os.environ.get("ATTN", "auto")
    if want in ("auto", "varlen"):
        why = probe_varlen()
        if why is None:
            ATTN_MODE["mode"] = "varlen"
            return "varlen"
        note(
            f"flash varlen attention unavailable ({why}): fallback = one causal sdpa per document (doc-loop)"
        )
        ATTN_MODE["mode"] = "doc-loop"
        return "doc-loop"
    if want == "doc-loop":
        ATTN_MODE["mode"] = "doc-loop"
    return want


def set_attn(base, attn):
    name = CUSTOM_ATTN if attn in ("varlen", "doc-loop") else attn
    if base.config._attn_implementation == name:
        return
    try:
        base.set_attn_implementation(name)
    except Exception as e:
        log(
            f"set_attn_implementation({name}) failed ({type(e).__name__}: {str(e)[:100]}); setting the config"
        )
        base.config._attn_implementation = name
    assert base.config._attn_implementation == name, (base.config._attn_implementation, name)


def check_packing(attns):
    """Packed row vs each document alone, through the same forward path as the configs, on a small model.

    'sdpa-hf' is the baseline's path (transformers' mask from position ids) and tells whether the
    anchor's packed rows really are document-masked in this transformers version."""
    res = {}
    dt = torch.bfloat16 if DEV == "cuda" else torch.float32
    c = LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        use_cache=False,
    )
    c._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(DEV):
        m = LlamaForCausalLM._from_config(c, dtype=dt).eval()
    docs = [37, 100, 63]
    ids = torch.randint(0, 1000, (1, sum(docs)), device=DEV)
    pos = torch.cat([torch.arange(d) for d in docs])[None].to(DEV)
    with torch.no_grad():
        ref, s = [], 0
        for d in docs:
            ref.append(m.model(input_ids=ids[:, s : s + d], use_cache=False).last_hidden_state)
            s += d
        ref = torch.cat(ref, 1).float()
        cu = torch.tensor([0] + torch.tensor(docs).cumsum(0).tolist(), dtype=torch.int32, device=DEV)
        bounds = [(0, 37), (37, 137), (137, 200)]
        for a in ["control", "sdpa-hf"] + list(attns):
            try:
                kw = {}
                if a == "control":  # a 2-D mask turns transformers' packed-sequence detection off: must leak
                    kw = dict(attention_mask=torch.ones_like(ids))
                if a in ("varlen", "doc-loop"):
                    saved = ATTN_MODE["mode"]
                    ATTN_MODE["mode"] = a
                    kw = dict(
                        cu_seq_lens_q=cu,
                        cu_seq_lens_k=cu,
                        max_length_q=max(docs),
                        max_length_k=max(docs),
                        doc_bounds=bounds,
                    )
                set_attn(m, "sdpa" if a in ("sdpa-hf", "control") else a)
                h = m.model(input_ids=ids, position_ids=pos, use_cache=False, **kw).last_hidden_state.float()
                if a in ("varlen", "doc-loop"):
                    ATTN_MODE["mode"] = saved
                res[a] = round(((h - ref).norm() / ref.norm()).item(), 5)
            except Exception as e:
                res[a] = f"error {type(e).__name__}: {str(e)[:100]}"
    del m
    free()
    tol = 3e-2 if dt == torch.bfloat16 else 1e-4
    for a, r in res.items():
        ok = isinstance(r, float) and r < tol
        log(
            f"packing check {a:>14}: packed row vs documents alone, rel err {r} -> "
            f"{'documents isolated' if ok else 'NOT isolated / failed'}"
            + ("  (control: plain causal over the row, expected to leak)" if a == "control" else "")
        )
    return res


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def lora_layers(m):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [mod for mod in m.modules() if isinstance(mod, BaseTunerLayer)]


def wrap_lora(base):
    m = get_peft_model(base, LoraConfig(**LORA))  # PEFT default: fp32 adapters on a bf16 base
    m.config.use_cache = False
    m.train()
    return m


def build_bf16():
    torch.manual_seed(0)
    t = time.time()
    with torch.device(DEV):
        base = LlamaForCausalLM._from_config(CFG, dtype=torch.bfloat16)
    log(f"built bf16 model in {time.time() - t:.1f}s")
    return base


BUILD = dict(peak_gib=None)


def build_qlora():
    """4-bit NF4 base built layer by layer: meta skeleton, each linear drawn in bf16 on the device and
    quantized at once, so the bf16 copy never exceeds one matrix. Embeddings, norms, lm_head bf16."""
    bnb, err = bnb_module()
    if bnb is None:
        raise RuntimeError(f"bitsandbytes unavailable: {err}")
    torch.manual_seed(0)
    g = torch.Generator(device=DEV).manual_seed(0)
    t = time.time()
    with torch.device("meta"):
        base = LlamaForCausalLM._from_config(CFG, dtype=torch.bfloat16)
    for mod in (base.model.embed_tokens, base.lm_head):
        mod.to_empty(device=DEV)
        mod.weight.data.normal_(0.0, 0.02, generator=g)
    with torch.device(DEV):
        base.model.rotary_emb = type(base.model.rotary_emb)(config=CFG)
    n_q = 0
    for layer in base.model.layers:
        for name, mod in list(layer.named_modules()):
            if isinstance(mod, torch.nn.Linear) and not isinstance(mod, bnb.nn.Linear4bit):
                w = torch.empty(mod.out_features, mod.in_features, dtype=torch.bfloat16, device=DEV)
                w.normal_(0.0, 0.02, generator=g)
                q = bnb.nn.Linear4bit(
                    mod.in_features,
                    mod.out_features,
                    bias=False,
                    compute_dtype=torch.bfloat16,
                    compress_statistics=True,
                    quant_type="nf4",
                    device="meta",
                )
                q.weight = bnb.nn.Params4bit(
                    w, requires_grad=False, compress_statistics=True, quant_type="nf4", module=q
                ).to(DEV)
                del w
                parent = layer.get_submodule(name.rsplit(".", 1)[0]) if "." in name else layer
                setattr(parent, name.rsplit(".", 1)[-1], q)
                n_q += 1
        for mod in layer.modules():  # norms
            if isinstance(mod, bnb.nn.Linear4bit):
                continue
            if any(p.is_meta for p in mod.parameters(recurse=False)):
                mod.to_empty(device=DEV, recurse=False)
                for p in mod.parameters(recurse=False):
                    p.data.fill_(1.0)
    base.model.norm.to_empty(device=DEV)
    base.model.norm.weight.data.fill_(1.0)
    left = [n for n, p in list(base.named_parameters()) + list(base.named_buffers()) if p.is_meta]
    assert not left, f"still on meta: {left[:5]}"
    base.is_loaded_in_4bit = True  # PEFT then wraps Linear4bit with its bnb LoRA layer
    BUILD["peak_gib"] = gib(torch.cuda.max_memory_allocated()) if DEV == "cuda" else None
    log(
        f"built 4-bit model ({n_q} NF4 linears) in {time.time() - t:.1f}s, build peak {BUILD['peak_gib']} GiB"
    )
    return base


def set_gc(m, every):
    """every=0: off; 1: every layer; k: layers 0, k, 2k, ... (non-reentrant)."""
    base = m.get_base_model()
    if every <= 0:
        m.gradient_checkpointing_disable()
        return
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for i, layer in enumerate(base.model.layers):
        layer.gradient_checkpointing = i % every == 0


def set_lora_prec(m, prec):
    """autocast: fp32 adapters, bf16 compute (no fp32 cast of each input); fp32: PEFT default; bf16: cast."""
    layers = lora_layers(m)
    for mod in layers:
        mod.cast_input_dtype_enabled = prec == "fp32"
    if prec == "bf16":
        for n, p in m.named_parameters():
            if p.requires_grad and "lora_" in n:
                p.data = p.data.to(torch.bfloat16)
    elif prec in ("fp32", "autocast"):
        for n, p in m.named_parameters():
            if p.requires_grad and "lora_" in n and p.dtype != torch.float32:
                p.data = p.data.float()


# ---------------------------------------------------------------------------------------------
# losses and the timed loop
# ---------------------------------------------------------------------------------------------
def chunked_ce(h, weight, tgt, chunk=4096 // SCALE):
    """Cross-entropy over lm_head without whole logits: per chunk, recomputed in backward."""
    n = (tgt != -100).sum().clamp(min=1)

    def piece(hh, tt):
        return F.cross_entropy((hh @ weight.t()).float(), tt, ignore_index=-100, reduction="sum")

    total = 0.0
    for s in range(0, h.shape[0], chunk):
        total = total + torch.utils.checkpoint.checkpoint(
            piece, h[s : s + chunk], tgt[s : s + chunk], use_reentrant=False
        )
    return total / n


def make_loss_fn(m, kind):
    base = m.get_base_model()
    if kind == "hf":

        def step(b):
            return m(input_ids=b["ids"], attention_mask=None, position_ids=b["pos"], labels=b["ids"]).loss

        return step
    lce = LIGER["lce"]() if LIGER else None
    amp = (lambda: torch.autocast(DEV, dtype=torch.bfloat16)) if LORA_PREC == "autocast" else nullcontext

    def step(b):
        with amp():
            h = base.model(
                input_ids=b["ids"], position_ids=b["pos"], use_cache=False, **b["kw"]
            ).last_hidden_state
            h = h.reshape(-1, h.shape[-1])
            tgt = b["tgt"].reshape(-1)
            if lce is not None:
                return lce(base.lm_head.weight, h, tgt)
            return chunked_ce(h, base.lm_head.weight, tgt)

    return step


def timed(m, loss_fn, batches, warm):
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=DEV == "cuda")
    free()
    t0, done, tok, warm_s, grads_ok = None, 0, 0, 0.0, "?"
    t_warm = time.time()
    for i, b in enumerate(batches):
        if i == warm:
            sync()
            t0 = time.time()
            warm_s = t0 - t_warm
        loss = loss_fn(b)
        loss.backward()
        if i == 1:  # after one optimizer step every adapter matrix should receive a gradient
            with torch.no_grad():
                nz = sum(int(p.grad is not None and bool(p.grad.abs().sum() > 0)) for p in params)
            grads_ok = f"{nz}/{len(params)}"
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warm:
            done += 1
            tok += b["tokens"]
            if done >= 2 and time.time() - t0 > TIME_CAP_S:
                break
    last = float(loss.detach())
    sync()
    dt = time.time() - t0
    peak = torch.cuda.max_memory_allocated() if DEV == "cuda" else 0
    del opt
    return dict(
        tokens_per_s=tok / dt,
        peak_gib=gib(peak) if DEV == "cuda" else None,
        timed_steps=done,
        warmup_s=round(warm_s, 1),
        step_s=round(dt / done, 3),
        last_loss=round(last, 3),
        lora_params_with_grad=grads_ok,
        lora_layer=type(lora_layers(m)[0]).__module__.split(".")[-1] + "." + type(lora_layers(m)[0]).__name__,
    )


# ---------------------------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------------------------
def env_int(name, default):
    return int(os.environ.get(name, default))


def spec(name, attn):
    fr, fmb = env_int("FAST_ROWS", 4096), env_int("FAST_MB", 2)
    s = {
        "baseline": dict(kind="hf", rows=8192, mb=1, gc=1, attn="sdpa", warm=2),
        "fast": dict(kind="ours", rows=fr, mb=fmb, gc=0, attn=attn),
        "selective": dict(kind="ours", rows=8192, mb=1, gc=env_int("SEL_EVERY", 2), attn=attn),
        "long": dict(
            kind="ours", rows=env_int("LONG_ROWS", 16384), mb=1, gc=env_int("LONG_GC_EVERY", 1), attn=attn
        ),
        "fast-mb1": dict(kind="ours", rows=fr, mb=1, gc=0, attn=attn),
        "qlora": dict(kind="ours", rows=env_int("QLORA_ROWS", 8192), mb=1, gc=1, attn=attn, quant=True),
        "fast-flex": dict(kind="ours", rows=fr, mb=fmb, gc=0, attn="flex_attention", extra=True, est_s=120),
        "fast-compile": dict(
            kind="ours", rows=fr, mb=fmb, gc=0, attn=attn, compile=True, extra=True, est_s=180, warm=4
        ),  # static graph, then one dynamic recompile (cu_seqlens length varies)
    }[name]
    s = dict(s)
    s["rows"] = max(s["rows"] // SCALE, 16)
    s.setdefault("warm", 3)
    s["warm"] = env_int("WARM", 1 if TINY else s["warm"])
    return s


def describe(name, s):
    if s["kind"] == "hf":
        return f"packed {s['rows']}x{s['mb']}, gc all, {s['attn']}, HF loss (logits), fp32 LoRA"
    gc_s = {0: "no gc", 1: "gc all"}.get(s["gc"], f"gc every {s['gc']}")
    lk = ("liger" if LIGER_APPLIED else "no-liger") + (" FLCE" if LIGER else " chunked-CE")
    return (
        f"{'NF4 ' if s.get('quant') else ''}rows {s['rows']}x{s['mb']}, {gc_s}, {s['attn']}, {lk}, "
        f"LoRA {LORA_PREC}{', compiled layers' if s.get('compile') else ''}"
    )


def run_config(name, s, m, results):
    batches = (
        baseline_batches(s["rows"], s["warm"] + STEPS)
        if s["kind"] == "hf"
        else ours_batches(s["rows"], s["mb"], s["warm"] + STEPS, s["attn"], fixed_max=bool(s.get("compile")))
    )
    base = m.get_base_model()
    set_attn(base, "sdpa" if s["kind"] == "hf" else s["attn"])
    set_gc(m, s["gc"])
    set_lora_prec(m, "fp32" if s["kind"] == "hf" else LORA_PREC)
    compiled = []
    if s.get("compile"):
        for layer in base.model.layers:
            layer.compile()
            compiled.append(layer)
    res = dict(config=name, desc=describe(name, s), tokens_per_step=s["rows"] * s["mb"])
    if s.get("quant"):
        res["build_peak_gib"] = BUILD["peak_gib"]
    try:
        res.update(timed(m, make_loss_fn(m, s["kind"]), batches, s["warm"]))
    except torch.OutOfMemoryError as e:
        res["error"] = "OOM"
        res["detail"] = str(e).splitlines()[0][:160]
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        log(traceback.format_exc()[-1500:])
    finally:
        for layer in compiled:
            layer._compiled_call_impl = None
        if compiled:
            torch._dynamo.reset()
    for p in m.parameters():
        p.grad = None
    del batches
    free()
    if "tokens_per_s" in res:
        res["mfu_4N"] = round(res["tokens_per_s"] * 4 * N_PARAMS / PEAK, 4)
        res["tokens_per_s"] = round(res["tokens_per_s"])
    results.append(res)
    log(json.dumps(res))
    return res


def write_json(payload):
    out = os.environ.get("OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "sft_bench.json"), "w") as f:
            json.dump(payload, f, indent=1)


def table(results, base_tps):
    lines = [f"{'config':<13} {'tokens/s':>9} {'peak GiB':>9} {'MFU(4N)':>8} {'x base':>7}  setting"]
    for r in results:
        if "tokens_per_s" in r:
            ratio = f"{r['tokens_per_s'] / base_tps:.2f}" if base_tps else "-"
            pk = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
            mfu = f"{r['mfu_4N'] * 100:.1f}%"
            tps = f"{r['tokens_per_s']:,}"
            lines.append(f"{r['config']:<13} {tps:>9} {pk:>9} {mfu:>8} {ratio:>7}  {r['desc']}")
        else:
            lines.append(
                f"{r['config']:<13} {r.get('error', '?')[:9]:>9} {'-':>9} {'-':>8} {'-':>7}  {r['desc']}"
                + (f"  [{r['error']}]" if len(r.get("error", "")) > 9 else "")
            )
    return "\n".join(lines)


def main():
    log(
        "torch",
        torch.__version__,
        "cuda",
        torch.version.cuda,
        "|",
        "transformers",
        transformers.__version__,
        "| peft",
        peft.__version__,
        "| liger",
        LIGER["version"] if LIGER else None,
        "| bnb",
        getattr(bnb_module()[0], "__version__", None),
        "|",
        torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu",
        "| TINY" if TINY else "",
    )
    default = (
        "baseline,fast,selective,long,fast-mb1,qlora"
        + (",fast-compile" if os.environ.get("COMPILE", "0") not in ("", "0") else "")
        + ",fast-flex"
    )
    names = [n.strip() for n in os.environ.get("CONFIGS", default).split(",") if n.strip()]
    attn = choose_attn()
    probe_attns = [attn] + (["flex_attention"] if "fast-flex" in names else [])
    payload = dict(
        device=torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu",
        tiny=TINY,
        versions=dict(
            torch=torch.__version__,
            transformers=transformers.__version__,
            peft=peft.__version__,
            liger=LIGER["version"] if LIGER else None,
        ),
        attn=attn,
        varlen_impl=VARLEN["name"],
        lora_prec=LORA_PREC,
        peak_tflops=PEAK / 1e12,
        n_params=N_PARAMS,
        notes=NOTES,
        results=[],
    )
    payload["packing_check"] = check_packing(probe_attns)
    write_json(payload)

    results = payload["results"]
    # bf16 configs share one model; QLoRA frees it; extras after QLoRA rebuild it
    core = [n for n in names if not spec(n, attn).get("extra") and n != "qlora"]
    tail = [n for n in names if n == "qlora"] + [n for n in names if spec(n, attn).get("extra")]
    order = core + tail
    m = None
    base_tps = None
    for i, name in enumerate(order):
        s = spec(name, attn)
        left = BUDGET_S - elapsed()
        reserve = 60 if ("qlora" in order[i + 1 :] and not TINY) else 0
        need = s.get("est_s", 25 if not TINY else 1)
        why = None
        if left < need + reserve:
            why = f"skipped: {left:.0f}s of budget left"
        elif s["attn"] == "flex_attention" and DEV == "cpu":
            why = "skipped: flex_attention has no backward on CPU"
        elif s.get("compile") and DEV == "cpu" and not os.environ.get("COMPILE_CPU"):
            why = "skipped: torch.compile on CPU (set COMPILE_CPU=1 to try)"
        elif s.get("quant") and bnb_module()[0] is None:
            why = f"skipped: bitsandbytes unavailable ({bnb_module()[1]})"
        if why:
            res = dict(config=name, desc=describe(name, s), error=why)
            results.append(res)
            log(json.dumps(res))
            write_json(payload)
            continue
        log(f"--- {name} ({elapsed():.0f}s elapsed)")
        try:
            if s.get("quant"):
                if m is not None:
                    del m
                    m = None
                    free()
                m = wrap_lora(build_qlora())
                m.qlora = True
            elif m is None or getattr(m, "qlora", False):
                if m is not None:
                    del m
                    m = None
                    free()
                m = wrap_lora(build_bf16())
                m.enable_input_require_grads()  # the anchor does this (for reentrant checkpointing)
            if s["kind"] == "ours" and not getattr(m, "liger_on", False):
                apply_liger(m.get_base_model())
                m.liger_on = True
        except torch.OutOfMemoryError:
            res = dict(config=name, desc=describe(name, s), error="OOM (model build)")
            results.append(res)
            log(json.dumps(res))
            m = None
            free()
            continue
        res = run_config(name, s, m, results)
        if name == "baseline" and "tokens_per_s" in res:
            base_tps = res["tokens_per_s"]
        if base_tps:
            for r in results:
                if "tokens_per_s" in r:
                    r["x_baseline"] = round(r["tokens_per_s"] / base_tps, 2)
        write_json(payload)
    del m
    free()
    payload["total_s"] = round(elapsed(), 1)
    write_json(payload)
    log("")
    log(
        f"SFT step, {'TINY model' if TINY else 'Llama-3.1-8B shape'}, LoRA r16 all linear, bf16, "
        f"{payload['device']}; MFU at 4·N FLOP/token, N={N_PARAMS:.3g}, peak {PEAK / 1e12:.0f} TFLOP/s; "
        f"attention '{attn}'" + (f" via {VARLEN['name']}" if attn == "varlen" else "")
    )
    if base_tps is None:
        log("(no baseline row in this run: ratios omitted)")
    log(table(results, base_tps))
    for n in NOTES:
        log("fallback:", n)
    log(f"total {elapsed():.0f}s")


if __name__ == "__main__":
    sys.exit(main())
