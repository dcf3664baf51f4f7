"""PPA: post-pretraining alignment with MoCo and TLM on parallel data, then zero-shot fine-tuning.

Paper: Pan et al. (2021), "Multilingual BERT Post-Pretraining Alignment", NAACL 2021,
       sections 2.1-2.3 (Eq. 2-4) and 3.3. https://arxiv.org/abs/2010.12547
Reference code: none published; the MoCo mechanics follow facebookresearch/moco, moco/builder.py
       (momentum update before the keys, FIFO queue).

Usage:
    # stage 1: align mBERT/XLM-R on parallel sentences, save the query encoder as a HF folder
    python ppa_moco_tlm.py --stage align --model bert-base-multilingual-cased \
        --parallel europarl.en,europarl.de europarl.en,europarl.fr pairs.tsv --save_dir runs/ppa/aligned
    python ppa_moco_tlm.py --stage align --parallel massive:data/massive:th,hi,de --min_len 3 ...
    # stage 2: fine-tune the aligned encoder (or any --model) on English, test zero-shot
    python ppa_moco_tlm.py --stage finetune --model runs/ppa/aligned --data xnli --lang all
    python ppa_moco_tlm.py --stage finetune --model runs/ppa/aligned --data xnli --lang de --translate_train --code_switch
    python ppa_moco_tlm.py --stage finetune --model runs/ppa/aligned --data mlqa --lang de,es --data_dir data/qa
    # the demo, offline on a CPU in seconds (--stage defaults to finetune; the align stage reads the
    # demo's --lang translations as parallel data, paired by id, with --min_len 1)
    python ppa_moco_tlm.py --data demo --model tiny
    python ppa_moco_tlm.py --data demo --model tiny --stage align
    python ppa_moco_tlm.py --data demo --model runs/ppa/align-s123456789/aligned   # the demo's settings again

Stage 1 (what this file adds): per pair, a coin decides which side the query encoder reads and
which the momentum key encoder reads ("random input shuffling"); both take the L2-normalised final
[CLS] (first-token) state through z = W2 ReLU(W1 h) to 300 dims; InfoNCE against the key and a
queue of 32,000 earlier keys at temperature 0.05 (Eq. 3); plus TLM on the pair concatenated in the
same order (`<s> q </s></s> k </s>` for XLM-R, `[CLS] q [SEP] k [SEP]` for BERT, with segment ids 0
and 1 where the encoder has them: no position reset, no language embeddings), 15% of subwords
masked 80/10/10, through the query encoder's MLM head (applied to the selected positions only: the
loss is the same, and on a 2-core CPU the align step is about 2x faster: the vocabulary projection
at every position costs as much as the encoder).
L = L_MoCo + L_TLM (Eq. 4); --no_tlm and --mlm_instead_of_tlm are Table 5's ablations. AdamW (wd
0.01), lr 3e-5, 10% warm-up then linear decay, batch 128, max length 128, 10 epochs. The paper's
length filter (either side under 10 subwords, or the pair over 128) is --min_len / --max_len.

Stage 2: the [CLS] state with a linear head for sentence pairs (XNLI, PAWS-X) and intents (MASSIVE,
MTOD, MTOP, MultiATIS++, demo; slots are not trained), or a start/end head for extractive QA (SQuAD
v1.1 train, MLQA dev/test). --translate_train adds each English example's translations;
--code_switch (section 2.3) adds, for a translated pair (a_x, b_x), (a_x, b_en) and (a_en, b_x),
kept in the same batch. AdamW (wd 0.01), linear schedule, warm-up 1,000 steps (at most 10% of a
short run; the decay reaches 0 at the last step actually taken), batch 32, 2 epochs, lr 5e-5 (QA:
3e-5, max length 386, English SQuAD only: no --translate_train or --code_switch); --head_lr gives
the new head its own rate (not in the paper; our CPU runs of multilingual-e5 use 1e-3, as for the
other methods). BERT-family encoders see segment ids for sentence pairs, as in pre-training.

Paper vs this file. The paper does not say whether the projection is also applied on the key side
or how W1/W2 are initialised: both encoders carry it (MoCo v2) and the key copy follows by momentum.
An encoder without an MLM head (e.g. multilingual-e5) gets a fresh one (transform + decoder tied to
the word embeddings) from AutoModelForMaskedLM; the run says so. One process (no torchrun): MoCo
across processes needs the keys gathered before they are queued, which this teaching file leaves out.

Shapes: B pairs per batch, T subwords, d hidden size, D = 300 projection size, K queue size, V vocab.
"""
import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

# section 3.3: alignment (PPA) and fine-tuning settings; MLQA differs in lr and max length
ALIGN = dict(lr=3e-5, epochs=10, batch_size=128, max_len=128)
FINETUNE = dict(lr=5e-5, epochs=2, batch_size=32, max_len=128)
QA = dict(lr=3e-5, epochs=2, batch_size=32, max_len=386)
DEMO = dict(lr=1e-3, epochs=8, batch_size=16, max_len=64)  # --model tiny on the demo data
DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"  # ships with the repository


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=common.HelpFormatter)
    common.add_run_args(p, datasets=common.DATASETS + ("mlqa",), default_data="xnli")
    g = p.add_argument_group("method")
    g.add_argument("--stage", choices=["align", "finetune"], default="finetune",
                   help="1: align on parallel data; 2: fine-tune and test")
    g.add_argument("--parallel", nargs="+", default=[], metavar="SPEC",
                   help="align: SRC,TGT (line-aligned files, English first), PAIRS.tsv (english<TAB>other), or "
                        "<data>:<data_dir>:<lang,lang|all> (a dataset's English train with its translations); "
                        "with --data demo, the demo's --lang translations")
    g.add_argument("--save_dir", default=None, help="align: where the aligned encoder goes (default <out_dir>/aligned)")
    g.add_argument("--min_len", type=int, default=None, help="align: drop pairs with a side under this many "
                   "subwords (default: 10, the paper's; 1 for the demo's short utterances)")
    g.add_argument("--queue", type=int, default=32000, help="align: MoCo queue size K (a multiple of --batch_size)")
    g.add_argument("--momentum", type=float, default=0.999, help="align: key encoder momentum m")
    g.add_argument("--temperature", type=float, default=0.05, help="align: InfoNCE temperature tau")
    g.add_argument("--proj_dim", type=int, default=300, help="align: projection size d_k")
    g.add_argument("--mask_prob", type=float, default=0.15, help="align: fraction of subwords masked for TLM")
    g.add_argument("--no_tlm", action="store_true", help="align: MoCo only (Table 5, -TLM)")
    g.add_argument("--mlm_instead_of_tlm", action="store_true", help="align: MLM on each side separately (Table 5)")
    g.add_argument("--translate_train", action="store_true", help="finetune: also train on the translations")
    g.add_argument("--code_switch", action="store_true", help="finetune: add (a_x, b_en) and (a_en, b_x) per translated pair")
    g.add_argument("--warmup_steps", type=int, default=1000, help="finetune: linear warm-up steps (at most 10%% of the run)")
    g.add_argument("--cls", choices=["pooler", "first"], default="first", help="finetune: sentence vector (paper: [CLS] state)")
    g.add_argument("--head_lr", type=float, default=None, help="finetune: peak lr of the new task head (default: --lr, "
                   "as the paper; a small CPU run of an encoder without a trained pooler needs more, e.g. 1e-3)")
    args = p.parse_args(argv)
    default = ALIGN if args.stage == "align" else QA if args.data == "mlqa" else FINETUNE
    if args.model == "tiny" or aligned_from(args.model).get("from") == "tiny":  # also stage 2 of the demo
        default = DEMO
    for k, v in default.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.data_dir = args.data_dir or (str(DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    demo_pairs = args.stage == "align" and not args.parallel and args.data == "demo"
    if demo_pairs:  # the demo's files are translations of each other, line by line (paired by id)
        args.parallel = [f"demo:{args.data_dir}:{args.lang}"]
    if args.min_len is None:
        args.min_len = 1 if demo_pairs else 10
    args.out_dir = args.out_dir or (f"runs/ppa/align-s{args.seed}" if args.stage == "align" else
                                    common.default_out_dir("ppa", args))
    args.save_dir = args.save_dir or str(Path(args.out_dir) / "aligned")
    if args.stage == "align":
        if not args.parallel:
            p.error("--stage align needs --parallel (or --data demo, whose languages are parallel)")
        if args.queue % args.batch_size:
            p.error(f"--queue {args.queue} must be a multiple of --batch_size {args.batch_size} (MoCo enqueues whole "
                    f"batches), e.g. --queue {args.queue // args.batch_size * args.batch_size or args.batch_size}")
        if args.no_tlm and args.mlm_instead_of_tlm:
            p.error("--no_tlm and --mlm_instead_of_tlm exclude each other")
    if args.code_switch and not args.translate_train:
        p.error("--code_switch augments the translated pairs: add --translate_train")
    if args.stage == "finetune" and args.data == "mlqa" and (args.translate_train or args.code_switch):
        p.error("--data mlqa trains on English SQuAD only: --translate_train and --code_switch are not implemented for QA")
    common.check_run_args(p, args)
    return args


# ---------------------------------------------------------------------------- losses


def moco_loss(q, k, queue, temperature=0.05):
    """InfoNCE of MoCo (Eq. 3), each query against its own key and the K queued negatives:

        L_MoCo = -1/B sum_i log( exp(z_q,i . z_k+,i / tau) / (exp(z_q,i . z_k+,i / tau) + sum_{j=1..K} exp(z_q,i . n_j / tau)) )

    q (B, D), k (B, D): L2-normalised query and key projections, row i of each from the two sides of
    pair i; queue (K, D): normalised negatives. Computed in float32 (under bf16 autocast q and k
    arrive in bf16, the queue is kept in float32). Returns a scalar."""
    q, k, queue = q.float(), k.float(), queue.float()
    pos = (q * k).sum(-1, keepdim=True)  # (B, 1)
    neg = q @ queue.T  # (B, K)
    logits = torch.cat([pos, neg], dim=1).float() / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def tlm_mask(input_ids, special_mask, mask_id, vocab_size, prob=0.15, generator=None):
    """BERT masking for TLM/MLM: each non-special subword is selected with probability `prob`; a
    selected one becomes <mask> 80% of the time, a random token 10%, and stays 10%. special_mask
    (B, T) is True for special tokens and padding, which are never selected. Returns (inputs,
    labels): labels hold the original id at selected positions and -100 elsewhere."""
    u = torch.rand(input_ids.shape, generator=generator)
    selected = (u < prob) & ~special_mask
    how = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[selected & (how < 0.8)] = mask_id
    rand = selected & (how >= 0.8) & (how < 0.9)
    inputs[rand] = torch.randint(vocab_size, input_ids.shape, generator=generator)[rand]
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    return inputs, labels


def tlm_loss(logits, labels):
    """Cross-entropy over the selected positions only (L_TLM of Eq. 4): logits (..., V) and labels
    (...) of the same leading shape, e.g. (B, T, V) / (B, T), or (N, V) / (N,) for N gathered positions."""
    if not (labels != -100).any():  # nothing selected in this batch
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1).to(logits.device),
                           ignore_index=-100)


def mlm_head(mlm):
    """The prediction head of a Hugging Face *ForMaskedLM model (BERT: .cls, RoBERTa/XLM-R: .lm_head),
    so that it can be applied to the selected positions only."""
    for name in ("lm_head", "cls"):
        if isinstance(getattr(mlm, name, None), nn.Module):
            return getattr(mlm, name)
    raise SystemExit(f"error: {type(mlm).__name__} has neither .lm_head nor .cls; ppa_moco_tlm.py does not know its MLM head")


class MomentumKeys:
    """MoCo's key side: a momentum copy of the query encoder and its projection, which the
    optimizer never updates, and the FIFO queue of their keys.

        theta_k <- m theta_k + (1 - m) theta_q      (before the keys of each step are encoded)

    queue (K, D) starts as random unit vectors; `enqueue` overwrites the oldest rows, wrapping."""

    def __init__(self, encoder, proj, size, dim, momentum, seed=0):
        self.encoder, self.proj = copy.deepcopy(encoder), copy.deepcopy(proj)
        for p in self.params():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        self.queue = F.normalize(torch.randn(size, dim, generator=g), dim=1).to(next(encoder.parameters()).device)
        self.ptr, self.momentum = 0, momentum

    def params(self):
        return [*self.encoder.parameters(), *self.proj.parameters()]

    @torch.no_grad()
    def update(self, encoder, proj):
        for pk, pq in zip(self.params(), [*encoder.parameters(), *proj.parameters()]):
            pk.mul_(self.momentum).add_(pq.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def enqueue(self, k):
        idx = (self.ptr + torch.arange(len(k))) % len(self.queue)
        self.queue[idx.to(self.queue.device)] = k.detach().to(self.queue.dtype)
        self.ptr = (self.ptr + len(k)) % len(self.queue)


def uses_segments(encoder, tok):
    """True for a BERT-family encoder, which has segment (token type) embeddings and whose tokenizer
    makes token_type_ids (0 on `[CLS] a [SEP]`, 1 on `b [SEP]`); False for XLM-R (one token type)."""
    return getattr(encoder.config, "type_vocab_size", 1) > 1 and "token_type_ids" in tok.model_input_names


def encoder_inputs(enc, device, segments, input_ids=None):
    """The encoder's keyword inputs from a tokenizer batch `enc`: its input_ids (or the given, e.g.
    masked, ones), attention_mask and, when `segments` (see uses_segments), its token_type_ids."""
    out = {"input_ids": (enc["input_ids"] if input_ids is None else input_ids).to(device),
           "attention_mask": enc["attention_mask"].to(device)}
    if segments and "token_type_ids" in enc:
        out["token_type_ids"] = enc["token_type_ids"].to(device)
    return out


def project(encoder, proj, enc, segments=False):
    """z = normalize(W2 ReLU(W1 normalize(h_[CLS]))), (B, D): Eq. 2 on the L2-normalised first-token state."""
    h = encoder(**encoder_inputs(enc, enc["input_ids"].device, segments)).last_hidden_state[:, 0]
    return F.normalize(proj(F.normalize(h.float(), dim=-1)), dim=-1)


# ---------------------------------------------------------------------------- stage 1: alignment


def schedule(opt, total, warmup):
    """Linear warm-up over `warmup` steps (at most 10% of the run), then linear decay to 0."""
    warm = max(1, min(warmup, total // 10))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))


def adamw(model, lr, device, head_lr=None):
    """AdamW with weight decay 0.01 on weight matrices, none on biases and LayerNorm (section 3.3);
    with head_lr, the task model's new heads (every parameter outside model.encoder) learn at that rate."""
    groups = {}  # (decay?, head?) -> parameters
    for n, p in model.named_parameters():
        groups.setdefault((p.ndim > 1, bool(head_lr) and not n.startswith("encoder.")), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": 0.01 if decay else 0.0, "lr": head_lr if head else lr}
                              for (decay, head), ps in groups.items()], lr=lr, fused=device.type in ("cpu", "cuda"))


def read_parallel_specs(specs):
    """[(english, other)] from every --parallel spec, with a count per spec."""
    pairs, counts = [], {}
    for spec in specs:
        if spec.count(":") == 2 and spec.split(":")[0] in common.INTENT_SLOT:
            data, folder, langs = spec.split(":")
            english = common.load_split(data, folder, "en", "train")
            for lang in common.resolve_langs(langs, data, folder):  # de,es or all
                tr = common.load_translations(data, folder, lang, english)
                got = [(" ".join(e.words), t) for e, t in zip(english, tr) if t]
                counts[f"{data}/{lang}"] = len(got)
                pairs += got
        else:
            got = common.read_parallel(spec.split(","))
            counts[spec] = len(got)
            pairs += got
    return pairs, counts


def align(args, device, autocast):
    from transformers import AutoModelForMaskedLM
    try:
        pairs, counts = read_parallel_specs(args.parallel)
    except common.DataError as e:
        raise SystemExit(f"error: {e}") from None
    enc0, tok = common.load_encoder(args.model, [s for p in pairs for s in p], args.out_dir, args.max_len)
    path = enc0.name_or_path
    del enc0
    mlm, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)  # query encoder + MLM head
    mlm, encoder = mlm.to(device), mlm.base_model
    head = mlm_head(mlm)
    common.log(f"parallel pairs: {counts} | MLM head: " + (f"new, {len(info['missing_keys'])} tensors initialised "
               "(the checkpoint has none)" if info["missing_keys"] else "from the checkpoint"))

    # the paper's length filter: both sides >= min_len subwords, the concatenation <= max_len
    n_sub = lambda s: len(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    kept = [(a, b) for a, b in pairs if n_sub(a) >= args.min_len and n_sub(b) >= args.min_len
            and len(tok(a, b)["input_ids"]) <= args.max_len]
    common.log(f"length filter: kept {len(kept)} of {len(pairs)} pairs (each side >= {args.min_len} subwords, "
               f"pair <= {args.max_len})")
    if len(kept) < args.batch_size:
        raise SystemExit(f"error: {len(kept)} pairs after the length filter, fewer than one batch of {args.batch_size}")

    h = encoder.config.hidden_size
    proj = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, args.proj_dim)).to(device)
    keys = MomentumKeys(encoder, proj, args.queue, args.proj_dim, args.momentum, args.seed)
    params = [*mlm.parameters(), *proj.parameters()]
    opt = adamw(nn.ModuleList([mlm, proj]), args.lr, device)
    per_epoch = len(kept) // args.batch_size  # whole batches only: the queue takes B keys at a time
    total = args.epochs * per_epoch
    total = min(total, args.max_steps) if args.max_steps else total
    sched = schedule(opt, total, total // 10)  # 10% warm-up, then linear decay
    special = set(tok.all_special_ids)
    segments = uses_segments(encoder, tok)  # BERT: token type 1 on the second sentence of a TLM pair
    gen = torch.Generator().manual_seed(args.seed)
    rng = random.Random(args.seed)
    mlm.train()
    history, step, t0 = [], 0, time.time()

    def batch(texts, texts_b=None):
        return tok(texts, texts_b, truncation=True, max_length=args.max_len, padding=True, return_tensors="pt")

    def masked_lm(enc):
        ids = enc["input_ids"]
        inputs, labels = tlm_mask(ids, torch.isin(ids, torch.tensor(sorted(special))), tok.mask_token_id, len(tok),
                                  args.mask_prob, gen)
        sel = labels != -100  # the head only on the ~15% selected positions: the vocabulary projection
        with autocast:        # over every position would cost more than the encoder itself
            h = encoder(**encoder_inputs(enc, device, segments, inputs)).last_hidden_state
            logits = head(h[sel.to(device)])
        return tlm_loss(logits, labels[sel])

    for epoch in range(1, args.epochs + 1):
        rng.shuffle(kept)
        sums = np.zeros(4)
        for s in range(0, per_epoch * args.batch_size, args.batch_size):
            chunk = kept[s:s + args.batch_size]
            swap = [rng.random() < 0.5 for _ in chunk]  # random input shuffling: who is query, who is key
            q_txt = [b if w else a for (a, b), w in zip(chunk, swap)]
            k_txt = [a if w else b for (a, b), w in zip(chunk, swap)]
            with autocast:
                q = project(encoder, proj, batch(q_txt).to(device), segments)
            with torch.no_grad():
                keys.update(encoder, proj)  # momentum update, then the keys
                with autocast:
                    k = project(keys.encoder, keys.proj, batch(k_txt).to(device), segments)
            loss_moco = moco_loss(q, k, keys.queue, args.temperature)
            with torch.no_grad():  # MoCo's acc@1: the own key scores above every queued negative
                acc = ((q * k).float().sum(-1) > (q.float() @ keys.queue.T).max(1).values).float().mean()
            if args.no_tlm:
                loss_tlm = torch.zeros((), device=device)
            elif args.mlm_instead_of_tlm:  # each side on its own (monolingual MLM)
                loss_tlm = masked_lm(batch(q_txt + k_txt))
            else:  # the pair concatenated in the shuffled order
                loss_tlm = masked_lm(batch(q_txt, k_txt))
            loss = loss_moco + loss_tlm  # Eq. 4
            if not torch.isfinite(loss):  # stop before a NaN reaches the weights
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()} "
                                 f"(moco {loss_moco.item()}, tlm {loss_tlm.item()}); stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            keys.enqueue(k)
            step += 1
            sums += [loss_moco.item(), loss_tlm.item(), acc.item(), 1]
            if step % args.log_every == 0 or step == total:
                el = time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | moco {loss_moco.item():.4f} acc@1 {acc.item():.2f} "
                           f"tlm {loss_tlm.item():.4f} "
                           f"| lr {sched.get_last_lr()[0]:.2e} | {step * args.batch_size / el:.1f} pairs/s "
                           f"| eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        n = max(sums[3], 1)
        history.append({"epoch": epoch, "moco": sums[0] / n, "tlm": sums[1] / n, "moco_acc": sums[2] / n})
        common.log(f"epoch {epoch} | mean moco {sums[0] / n:.4f} acc@1 {sums[2] / n:.3f} tlm {sums[1] / n:.4f}")
        if step >= total:
            break

    mlm.save_pretrained(args.save_dir)  # a normal HF folder: AutoModel.from_pretrained(save_dir) reads the encoder
    tok.save_pretrained(args.save_dir)
    variant = "ppa" + ("-no_tlm" if args.no_tlm else "-mlm" if args.mlm_instead_of_tlm else "")
    (Path(args.save_dir) / "ppa_align.json").write_text(json.dumps(  # tells stage 2 what it fine-tunes
        {"variant": variant, "from": args.model, "steps": step, "pairs_kept": len(kept), "args": vars(args)}, indent=2, default=str))
    common.log(f"saved the aligned query encoder to {args.save_dir} (use --model {args.save_dir})")
    path = common.save_results(args.out_dir, "ppa_align", args, {}, history=history, steps=step, pairs=counts,
                               pairs_kept=len(kept), save_dir=args.save_dir, wall_s=time.time() - t0,
                               peak_memory_mb=common.peak_memory_mb(device))
    common.log(f"wrote {path}")
    return history


# ---------------------------------------------------------------------------- stage 2: fine-tuning


def aligned_from(model):
    """The ppa_align.json that stage 1 writes beside an aligned encoder ({} for any other --model)."""
    marker = Path(model).expanduser() / "ppa_align.json"
    return json.loads(marker.read_text()) if marker.is_file() else {}


def method_name(args):
    """'finetune' for an encoder that stage 1 did not align, else the alignment variant (ppa,
    ppa-no_tlm, ppa-mlm, from the ppa_align.json stage 1 writes), then the fine-tuning data options."""
    name = aligned_from(args.model).get("variant", "finetune")
    return name + ("+translate_train" if args.translate_train else "") + ("+code_switch" if args.code_switch else "")


def finetune_items(args, tok, train, trans, labels):
    """Groups of encoded training items, one group per English example: the example, then (with
    --translate_train) each translation, then (with --code_switch, pairs only) the two mixed pairs."""
    groups = []
    where = f"{args.data}/{args.train_lang}/train"
    for i, ex in enumerate(train):
        group = [common.encode(tok, ex, labels, args.max_len, where)]
        for lang, t in trans.items():
            if not t[i]:
                continue
            if isinstance(ex, common.Pair):
                variants = [t[i]] + ([(t[i][0], ex.b), (ex.a, t[i][1])] if args.code_switch else [])
                group += [common.encode(tok, common.Pair(ex.id, a, b, ex.label), labels, args.max_len, where) for a, b in variants]
            else:  # an utterance: its translation with the English intent
                x = common.Example(ex.id, t[i].split(), ex.intent, ["O"] * len(t[i].split()))
                group.append(common.encode(tok, x, labels, args.max_len, where))
        for it in group:  # sentence-level training only: no slot labels
            it.pop("slot_labels", None)
            it.pop("starts", None)
        groups.append(group)
    return groups


def group_batches(groups, batch_size, rng):
    """Shuffle the groups, keep each group's items together, cut into batches of ~batch_size."""
    order = list(range(len(groups)))
    rng.shuffle(order)
    out, cur = [], []
    for g in order:
        cur += groups[g]
        if len(cur) >= batch_size:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def finetune(args, device, autocast):
    if args.data == "mlqa":
        return finetune_qa(args, device, autocast)
    try:
        langs = common.resolve_langs(args.lang, args.data, args.data_dir)
        train, trans, evals = common.load_data(args, langs, args.translate_train)
        enc, tok = common.load_encoder(args.model, common.texts_of(train, trans, evals), args.out_dir, args.max_len)
        labels = common.Labels.from_train(args.data, train, "io")
        groups = finetune_items(args, tok, train, trans, labels)
        evals = common.encode_evals(tok, evals, labels, args)
    except common.DataError as e:
        raise SystemExit(f"error: {e}") from None
    for note in common.notes():
        common.log(f"data note: {note}")
    n_items = sum(map(len, groups))
    common.log(f"train {len(groups)} {args.train_lang} examples, {n_items} items with translations/code-switching "
               f"| {len(labels.intents)} classes")
    model = common.TaskModel(enc, len(labels.intents), 0, args.cls).to(device)
    opt = adamw(model, args.lr, device, args.head_lr)
    rng = random.Random(args.seed)
    # every epoch's batches, drawn up front: groups are kept whole, so there can be fewer batches than
    # ceil(items / batch size), and the linear decay must end at the last step actually taken
    epochs = [group_batches(groups, args.batch_size, rng) for _ in range(args.epochs)]
    total = sum(map(len, epochs))
    total = min(total, args.max_steps) if args.max_steps else total
    sched = schedule(opt, total, args.warmup_steps)
    selector = common.EpochSelector(args, langs, evals, labels, tok.pad_token_id, device, autocast, "accuracy")
    step, seen, t_train, t_start = 0, 0, 0.0, time.time()
    segments = uses_segments(enc, tok)  # BERT: token type 1 on the second sentence of a pair
    for epoch, batches in enumerate(epochs, 1):
        t0, losses = time.time(), []
        for items in batches:
            b = common.collate(items, tok.pad_token_id)
            types = b["token_type_ids"].to(device) if segments and "token_type_ids" in b else None
            with autocast:
                _, logits, _, _ = model(b["input_ids"].to(device), b["attention_mask"].to(device), token_type_ids=types)
            loss = F.cross_entropy(logits.float(), b["intent"].to(device))
            if not torch.isfinite(loss):  # stop before a NaN reaches the weights
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()}; stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step, seen = step + 1, seen + len(items)
            losses.append(loss.item())
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | task {loss.item():.4f} | lr {sched.get_last_lr()[0]:.2e} "
                           f"| {seen / el:.1f} ex/s | eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        t_train += time.time() - t0
        selector.epoch_end(model, epoch, train_task_loss=float(np.mean(losses)))
        if step >= total:
            break
    name = method_name(args)
    return selector.finish(model, name, epoch, steps=step, train_examples_seen=seen,
                           train_examples_per_s=seen / max(t_train, 1e-9), wall_s=time.time() - t_start, world_size=1)


def finetune_qa(args, device, autocast):
    """SQuAD v1.1 (English) training, MLQA evaluation per language (F1 / exact match)."""
    langs = [x for x in args.lang.split(",") if x and x != "en"]
    try:
        train = common.load_qa(args.data_dir, args.train_lang, "train")
        if 0 < args.limit_train < len(train):
            train = [train[i] for i in sorted(random.Random(0).sample(range(len(train)), args.limit_train))]
        evals = {x: {s: common.load_qa(args.data_dir, x, s) for s in ("dev", "test")} for x in ["en", *langs]}
    except common.DataError as e:
        raise SystemExit(f"error: {e}") from None
    texts = [t for ex in train for t in (ex.question, ex.context)]
    enc, tok = common.load_encoder(args.model, texts, args.out_dir, args.max_len)
    for note in common.notes():
        common.log(f"data note: {note}")
    feats = [f for f in common.qa_features(tok, train, args.max_len) if f["start"] or train[f["example"]].answers]
    eval_feats = {x: {s: (exs, common.qa_features(tok, exs, args.max_len)) for s, exs in d.items()} for x, d in evals.items()}
    common.log(f"train {len(train)} questions, {len(feats)} windows")
    model = common.QAModel(enc).to(device)
    opt = adamw(model, args.lr, device, args.head_lr)
    total = args.epochs * math.ceil(len(feats) / args.batch_size)
    total = min(total, args.max_steps) if args.max_steps else total
    sched = schedule(opt, total, args.warmup_steps)
    rng, pad = random.Random(args.seed), tok.pad_token_id
    history, step, t_start = [], 0, time.time()
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(feats)
        losses = []
        for s in range(0, len(feats), args.batch_size):
            chunk = feats[s:s + args.batch_size]
            T = max(len(f["input_ids"]) for f in chunk)
            ids = torch.tensor([f["input_ids"] + [pad] * (T - len(f["input_ids"])) for f in chunk], device=device)
            with autocast:
                st, en = model(ids, (ids != pad).long())
            gold_s = torch.tensor([f["start"] for f in chunk], device=device)
            gold_e = torch.tensor([f["end"] for f in chunk], device=device)
            loss = (F.cross_entropy(st, gold_s) + F.cross_entropy(en, gold_e)) / 2
            if not torch.isfinite(loss):  # stop before a NaN reaches the weights
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()}; stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if step % args.log_every == 0 or step == total:
                common.log(f"step {step}/{total} epoch {epoch} | qa {loss.item():.4f} | lr {sched.get_last_lr()[0]:.2e}")
            if step >= total:
                break
        dev = {x: common.qa_evaluate(model, *d["dev"], x, pad, device, autocast) for x, d in eval_feats.items()}
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "dev": dev})
        common.log(f"epoch {epoch} dev | " + " | ".join(f"{x} f1 {m['f1']:.1f} em {m['exact_match']:.1f}" for x, m in dev.items()))
        if step >= total:
            break
    metrics = {x: {s: common.qa_evaluate(model, *v, x, pad, device, autocast) for s, v in d.items()} for x, d in eval_feats.items()}
    for x, m in metrics.items():
        common.log(f"final {x:>5} | " + " | ".join(f"{s} f1 {r['f1']:.2f} em {r['exact_match']:.2f}" for s, r in m.items()))
    path = common.save_results(args.out_dir, method_name(args) + "_qa", args, metrics, history=history, steps=step,
                               selected_epoch=len(history), wall_s=time.time() - t_start,
                               peak_memory_mb=common.peak_memory_mb(device), world_size=1)
    common.log(f"wrote {path}")
    return metrics


def main(argv=None):
    args = parse_args(argv)
    device, autocast, world = common.setup(args)
    if world > 1:
        raise SystemExit("error: ppa_moco_tlm.py runs on one process (the MoCo queue is not gathered across processes)")
    common.log(f"ppa_moco_tlm | stage {args.stage} | device {device} | bf16 autocast "
               f"{isinstance(autocast, torch.autocast)}\nargs {vars(args)}")
    return align(args, device, autocast) if args.stage == "align" else finetune(args, device, autocast)


if __name__ == "__main__":
    main()
