"""CrossAligner & Co: auxiliary alignment losses for zero-shot task-oriented NLU, on XLM-R.

Paper: Gritta, Hu & Iacobacci (2022), "CrossAligner & Co: Zero-Shot Transfer Methods for
       Task-Oriented Cross-lingual Natural Language Understanding", Findings of ACL 2022.
       https://arxiv.org/abs/2203.09982
Code: huawei-noah/noah-research @ aa0f80c, NLP/cross_aligner/ (train.py, xlm_ra.py, config/*.sh)

Usage:
    python crossaligner.py --data mtop --lang th --aux ca xa --weighting cov
    python crossaligner.py --data demo --model tiny --aux ca xa ctr ti     # the demo: CPU, < 1 min
    torchrun --nproc_per_node 4 crossaligner.py --data mtop --lang th    # one process per GPU

Auxiliary losses on (English, translation) pairs, CrossAligner (ca) and, as in their own files,
XeroAlign (xa), Contrastive (ctr), Translate-Intent (ti), added to the English task loss:

    L = L_task(English) + sum_{a in --aux} w_a L_a,   w_a = 1 (--weighting sum) or CoV (Eq. 2-3)

Deviations from the paper or the official code, and what we follow (cited in the code as "dev. N"):
  1. CoV weights (Eq. 3). Paper: std/mean of the loss ratios of steps <= t. Code: steps < t, eps
     1e-8 under the root (every weight is 1e-4 at step 2). Ours: the paper (`CoVWeighting`).
  2. CA input. Code: no mask, pads' logits read. Ours: zeroed, padded to L rows: batch-independent.
  3. MTOD. Paper: lr and epochs 50% lower there (1e-5, 5 epochs); code: 5e-6, 5. Ours: the code.
  4. "CLS": the pooler output (the code) by default; --cls first: the first token's state.
  5. Batch 10 in one step, as the aligned configs; the translations are the batch's own.
  6. CA target (Algorithm 1, TRANSFORMLABELS): multi-hot English slot tags, O included (as
     alignment.py); BCE on English and on the translation, summed; --max_len (CA's width) matters.
  7. The others as the code: ctr Eq. 1 (cosine, tau 1, English to target), xa MSE, ti intent head.
  8. CoV weights are not bounded by 1 (xa starts near 0, then grows); absent losses: no statistic.
  9. Tagging: IO, BIO restored at evaluation (as the paper); --tagging bio: section 5.1's BIO.
 10. Precision. The code: fp32. Ours: --dtype auto = bf16 autocast on GPUs with bf16, else fp16
     with a GradScaler; fp32 on the CPU. A non-finite loss (fp16 overflow) enters no CoV statistic.

Shapes: B batch, T subwords in the batch, L = --max_len, d hidden size, C intents, S slot tags.
"""
import argparse
import contextlib
import os
import random
import re
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import common

# The aligned configs (config/*.sh), slot data only; massive: MTOP's; demo: for --model tiny.
PAPER = {
    "mtop": dict(lr=2e-5, epochs=10, max_len=70, batch_size=10),
    "mtod": dict(lr=5e-6, epochs=5, max_len=50, batch_size=10),
    "matis": dict(lr=2e-5, epochs=10, max_len=100, batch_size=10),
    "massive": dict(lr=2e-5, epochs=10, max_len=100, batch_size=10),
    "demo": dict(lr=2e-3, epochs=12, max_len=64, batch_size=10),
}
AUX = ("ctr", "xa", "ca", "ti")  # the official code's order, which the weight vector follows


# ---------------------------------------------------------------------------- arguments

def at_least(low, kind=int):  # argparse type: a number >= low, or a one-line error naming the flag
    def parse(text):
        if kind(text) < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return kind(text)
    return parse


def positive(text):  # argparse type: a finite float > 0
    if not 0 < float(text) < float("inf"):  # nan fails every comparison
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return float(text)


def parse_args(argv=None):
    table = "\n".join(f"  {k:8} " + "  ".join(f"{n} {v:g}" for n, v in d.items())
                      for k, d in PAPER.items())
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"per --data (the paper's aligned configs):\n{table}")
    per_data = "(default: per --data, below)"
    # --- run (the same flags in every method file)
    p.add_argument("--data", choices=list(PAPER), default="demo", help="dataset (default: demo)")
    p.add_argument("--lang", default="de", help="targets: th, de,es or all (default: de)")
    p.add_argument("--model", default="xlm-roberta-large", help="HF hub name or local folder; "
                   "tiny: a random encoder built on the data, offline (default: xlm-roberta-large)")
    p.add_argument("--data_dir", help="dataset folder, official layout (default: data/<data>)")
    p.add_argument("--train_lang", default="en", help="language of the labelled training data; a "
                   "target language gives the 'Target' upper bound (default: en)")
    p.add_argument("--epochs", type=at_least(1), help=f"training epochs {per_data}")
    p.add_argument("--batch_size", type=at_least(1), help=f"batch size, all processes {per_data}")
    p.add_argument("--lr", type=positive, help=f"peak learning rate of the encoder {per_data}")
    p.add_argument("--max_len", type=at_least(8), help=f"max subwords per input {per_data}")
    p.add_argument("--seed", type=int, default=123456789, help="random seed (default: the code's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="autocast precision; auto: bf16 (else fp16) on a GPU, fp32 on the CPU")
    p.add_argument("--threads", type=at_least(0), default=0, help="CPU threads (default: 0: any)")
    p.add_argument("--out_dir", help="where results.json goes (default: runs/crossaligner/<aux>/"
                   "<data>-<lang>-<train_lang>-<model>-s<seed>[-steps<N>][-n<limit_train>])")
    p.add_argument("--overwrite", action="store_true", help="replace a results.json made otherwise")
    p.add_argument("--max_steps", type=at_least(0), default=0, help="stop after N optimizer steps "
                   "(default: 0, no cap)")
    p.add_argument("--limit_train", type=at_least(0), default=0, help="train on a fixed random "
                   "subset of N examples, the same for every seed and method (default: 0, all)")
    p.add_argument("--max_eval", type=at_least(0), default=0, help="evaluate on a fixed subset of "
                   "N examples of each dev and test set, for smoke runs (default: 0, all)")
    p.add_argument("--select_on", choices=["last", "en", "target"], default="last", help="epoch "
                   "reported: the final one (as the code), best en or target dev (default: last)")
    p.add_argument("--log_every", type=at_least(1), default=50, help="log interval (default: 50)")
    # --- method
    p.add_argument("--aux", nargs="*", choices=AUX, default=["ca"], help="ca CrossAligner, xa "
                   "XeroAlign, ctr contrastive, ti Translate-Intent; none: zero-shot (default: ca)")
    p.add_argument("--weighting", choices=["sum", "cov"], default="sum", help="weights of the aux "
                   "losses: 1 each (the paper's 1+1) or CoV (Eq. 2-3) (default: sum)")
    p.add_argument("--tagging", choices=["io", "bio"], default="io", help="slot tags trained: IO, "
                   "BIO restored at evaluation, or BIO (section 5.1) (default: io)")
    p.add_argument("--cls", choices=["pooler", "first"], default="pooler", help="sentence vector "
                   "of xa, ctr, ti: pooler output (code) or first token (paper) (default: pooler)")
    p.add_argument("--head_lr", type=positive, help="heads' peak lr (default: --lr); e5: 1e-2")
    p.set_defaults(**PAPER[p.parse_known_args(argv)[0].data])  # per --data; flags given win
    args = p.parse_args(argv)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        p.error(f"--device {args.device}: expected auto, cpu, cuda or cuda:N")
    if args.lang != "all" and any(not x.strip() for x in args.lang.split(",")):
        p.error(f"--lang {args.lang!r}: an empty language code; give codes separated by commas")
    if args.aux and args.train_lang != "en":  # the aux losses need English + translations
        p.error("--aux needs English training data: pass --aux alone with --train_lang")
    args.aux = [a for a in AUX if a in args.aux]  # the code's order (the weights'), no repeats
    return args


# ---------------------------------------------------------------------------- losses, CoV weights

def slot_presence(slot_labels, n_slots):
    """Algorithm 1, TRANSFORMLABELS: y_ca[s] = 1 if tag s (O too) labels any word of the utterance,
    else 0. slot_labels: (B, T) tag ids, -100 where no label. Returns (B, S) float."""
    hot = F.one_hot(slot_labels.clamp(min=0), n_slots) * (slot_labels >= 0).unsqueeze(-1)
    return hot.amax(dim=1).float()


def crossaligner_loss(slot_logits, attention_mask, y_ca, head, max_len):
    """CrossAligner loss of one view (Algorithm 1 lines 22-26 English, 28-31 target), B x S mean:
    L_view = BCE(sigmoid(CA(reshape(EC(tokens)) to L * S)), y_ca), logits zeroed at padding and
    padded to L rows (dev. 2). slot_logits (B, T <= L, S), attention_mask (B, T), y_ca (B, S)."""
    B, T, S = slot_logits.shape
    if T > max_len:  # F.pad with a negative width would silently crop the logits
        raise ValueError(f"crossaligner_loss: the batch has T={T} subwords, more than "
                         f"max_len={max_len}, the CrossAligner head's width")
    x = slot_logits.float() * attention_mask.unsqueeze(-1)
    x = F.pad(x, (0, 0, 0, max_len - T))  # (B, L, S)
    return F.binary_cross_entropy_with_logits(head(x.reshape(B, max_len * S)), y_ca)


def xeroalign_loss(cls_src, cls_tgt):
    """XeroAlign: L_xa = 1/(B d) sum_i || s_i - t_i ||^2, English and translation, (B, d) each."""
    return F.mse_loss(cls_src.float(), cls_tgt.float())  # fp32: autocast hands in bf16/fp16


def contrastive_loss(emb_src, emb_tgt, temperature=1.0, symmetric=False):
    """Contrastive alignment (section 3.2, Eq. 1), InfoNCE with in-batch negatives, (N, d) each;
    tau = 1, English -> target only (symmetric=False), as the code (Algorithm 2):
        L_ctr = -1/N sum_i log( exp(cos(e_i, t_i) / tau) / sum_k exp(cos(e_i, t_k) / tau) )"""
    sim = F.normalize(emb_src.float(), dim=-1) @ F.normalize(emb_tgt.float(), dim=-1).T \
        / temperature
    labels = torch.arange(len(sim), device=sim.device)
    loss = F.cross_entropy(sim, labels)
    return (loss + F.cross_entropy(sim.T, labels)) / 2 if symmetric else loss


def translate_intent_loss(intent_logits_tgt, intent_en):
    """Translate-Intent (Algorithm 3): L_ti = CE(IC(cls_tar), y_ic), English labels. (N, C), (N,)"""
    return F.cross_entropy(intent_logits_tgt.float(), intent_en)


class CoVWeighting:
    """Coefficient-of-Variation weights (Groenendijk et al. 2021, arXiv:2009.01717) as the paper
    uses them (section 3.4, Eq. 2-3): unnormalised, main loss unweighted, detached (floats):
        l_{a,t} = L_{a,t} / mean(L_{a,1..t-1}),      w_{a,t} = std(l_{a,1..t}) / mean(l_{a,1..t})
    population std of the ratios of steps <= t (dev. 1); step 1: l = w = 1 (1+1); a loss not
    `present` enters no statistic, keeps its weight; history mean 0: l = 1. Welford: O(1) memory."""
    def __init__(self, n):
        # per loss: steps present, mean of L and of l over them, sum of squared deviations of l
        self.t, self.mean_loss, self.mean_ratio, self.m2_ratio = np.zeros((4, n))
        self.weights = np.ones(n)

    def update(self, losses, present=None):
        """losses: this step's loss values (floats); present: which are real (default all)."""
        L = np.asarray(losses, dtype=np.float64)
        on = np.ones(len(L), bool) if present is None else np.asarray(present, bool)
        first = on & (self.t == 0)
        self.t += on
        safe = np.where(self.mean_loss > 0, self.mean_loss, 1.0)
        ratio = np.where(first | (self.mean_loss <= 0), 1.0, L / safe)
        t = np.maximum(self.t, 1)
        self.mean_loss = np.where(on, self.mean_loss + (L - self.mean_loss) / t, self.mean_loss)
        delta = ratio - self.mean_ratio
        mean_ratio = self.mean_ratio + delta / t
        self.m2_ratio = np.where(on, self.m2_ratio + delta * (ratio - mean_ratio), self.m2_ratio)
        self.mean_ratio = np.where(on, mean_ratio, self.mean_ratio)
        cov = np.sqrt(self.m2_ratio / t) / np.where(self.t > 0, self.mean_ratio, 1.0)  # ratios>=0
        self.weights = np.where(on, np.where(self.t > 1, cov, 1.0), self.weights)
        return self.weights


# ---------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    method = "crossaligner" if args.aux else "zeroshot" if args.train_lang == "en" else "target"
    data_dir = args.data_dir or str(common.DEMO_DIR if args.data == "demo" else f"data/{args.data}")
    sep = len(args.aux) > 1 or args.weighting == "cov"  # folder e.g. xa+ca-cov, ca, ca-cov
    name = "+".join(args.aux) + ("-" + args.weighting) * sep if args.aux else method
    out_dir = args.out_dir or common.default_out_dir(f"crossaligner/{name}", args)
    head_lr = args.head_lr or args.lr
    settings = {**vars(args), "data_dir": data_dir, "out_dir": out_dir, "head_lr": head_lr}
    # setup: one process per GPU under torchrun (WORLD_SIZE set), else one process
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ddp = world > 1
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: this torch sees no CUDA GPU")
    if args.batch_size % world:
        raise SystemExit(f"error: --batch_size {args.batch_size}: not divisible by {world}")
    if ddp:
        if not dist.is_initialized():  # (already started when a test runs several mains at once)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    main_rank = not ddp or dist.get_rank() == 0  # only rank 0 evaluates, logs and writes results
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    # precision (dev. 10): bf16 has fp32's range, so it needs no loss scaling; fp16 does
    dtype = args.dtype if args.dtype != "auto" else "float32" if device.type != "cuda" else \
        "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    autocast = contextlib.nullcontext() if dtype == "float32" else \
        torch.autocast(device.type, dtype=getattr(torch, dtype))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")  # off: a no-op
    common.check_out_dir(settings, __file__)  # before loading: a bad --out_dir fails now, not later
    common.log(f"{method} | device {device} | dtype {dtype} | processes {world}\nargs {settings}")
    # data: English (or --train_lang) examples, their translations, dev/test sets
    try:
        langs, train, trans, evals = common.load_task(
            args.data, data_dir, args.lang, args.train_lang, args.limit_train, bool(args.aux),
            max_eval=args.max_eval)
        enc, tok = common.load_encoder(args.model, common.texts_of(train, trans, evals), out_dir,
                                       args.max_len)
        labels = common.Labels.from_train(args.data, train, args.tagging)
        items = common.train_items(tok, train, labels, trans, args.max_len,
                                   f"{args.data}/{args.train_lang}/train")
        evals = common.encode_evals(tok, evals, labels, args.max_len, args.data)
    except common.DataError as e:  # bad input: one line naming the file and line
        raise SystemExit(f"error: {e}") from None
    for note in common.notes():
        common.log(f"data note: {note}")
    common.log(f"train {len(items)} {args.train_lang} examples" + "".join(
        f", {x}: {sum(t is not None for t in ts)} translations" for x, ts in trans.items()))
    shard = (dist.get_rank(), world) if ddp else None  # each process reads its own 1/world
    loader = common.make_loader(items, args.batch_size // world, tok.pad_token_id,
                                torch.Generator().manual_seed(args.seed), shard)
    S, L = len(labels.slots), args.max_len  # model: encoder; intent, entity, CA (3.1) heads
    model = common.TaskModel(enc, len(labels.intents), S, args.cls).to(device)
    model.ca_head = torch.nn.Linear(L * S, S).to(device)  # reads L * S numbers (dev. 2)
    opt = torch.optim.Adam(model.param_groups(args.lr, head_lr), lr=args.lr,
                           fused=device.type in ("cpu", "cuda"))  # as the code; fused: same result
    total = min(args.epochs * len(loader), args.max_steps or args.epochs * len(loader))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[args.lr, head_lr], total_steps=total)
    net = model if not ddp else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None)  # averages the gradients
    cov, weights = CoVWeighting(len(args.aux)), np.ones(len(args.aux))  # 1 + 1 unless cov
    # training, with dev evaluation after every epoch; --select_on keeps the best epoch's weights.
    # A batch b holds B English examples padded to the longest (T <= L): input_ids, attention_mask
    # (B, T), intent (B,), slot_labels (B, T): a word's tag on its first subword, -100 (ignored)
    # elsewhere; one translation per example, drawn from its --lang languages at each step:
    # tgt_input_ids, tgt_attention_mask, has_tgt (B,) False where none. net(ids, mask) returns
    # ("CLS" sentence vectors (N, d), intent logits (N, C), slot logits (N, T, S), states), N rows.
    key = "exact_match"  # every --data here has intents and slots
    watch = ["en"] if args.select_on == "en" else [x for x in langs if x != "en"] or ["en"]
    history, best = [], None  # best: (dev score, epoch, weights on the CPU)
    step, seen, skipped, t_train, t_start = 0, 0, 0, 0.0, time.time()
    for epoch in range(1, args.epochs + 1):
        if ddp:
            loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every process
        t0, sums = time.time(), torch.zeros(3 + len(args.aux), device=device)  # n, task, all, aux
        for b in loader:
            B = len(b["intent"])
            ids, mask = b["input_ids"], b["attention_mask"]
            if args.aux:  # English and translations through the encoder in one forward pass
                ids = torch.cat([ids, b["tgt_input_ids"]])
                mask = torch.cat([mask, b["tgt_attention_mask"]])
            ids, mask, intent = ids.to(device), mask.to(device), b["intent"].to(device)
            with autocast:
                cls, intent_logits, slot_logits, _ = net(ids, mask)
            loss_task = common.task_loss(intent_logits[:B], intent, slot_logits[:B],
                                         b["slot_labels"].to(device))  # English rows only
            # rows with a translation (a slice when all have one: boolean indexing syncs the GPU)
            has = slice(None) if not args.aux or b["has_tgt"].all() else b["has_tgt"].to(device)
            some = bool(args.aux) and bool(b["has_tgt"].any())  # False: xa/ctr/ti stay 0 (dev. 8)
            aux = dict.fromkeys(args.aux, torch.zeros((), device=device))
            # ---- Contrastive (Eq. 1, dev. 7): translation i against the batch's English rows
            if "ctr" in args.aux and some:
                aux["ctr"] = contrastive_loss(cls[:B][has], cls[B:][has])
            # ---- end Contrastive
            # ---- XeroAlign (dev. 7): MSE between each English CLS and its translation's
            if "xa" in args.aux and some:
                aux["xa"] = xeroalign_loss(cls[:B][has], cls[B:][has])
            # ---- end XeroAlign
            # ---- CrossAligner (Algorithm 1 lines 21-32): both views, English targets (dev. 2, 6)
            if "ca" in args.aux:
                y_ca = slot_presence(b["slot_labels"].to(device), S)
                aux["ca"] = crossaligner_loss(slot_logits[:B], mask[:B], y_ca, model.ca_head, L)
                if some:
                    aux["ca"] = aux["ca"] + crossaligner_loss(
                        slot_logits[B:][has], mask[B:][has], y_ca[has], model.ca_head, L)
            # ---- end CrossAligner
            # ---- Translate-Intent (Algorithm 3): the English intent on the translation
            if "ti" in args.aux and some:
                aux["ti"] = translate_intent_loss(intent_logits[B:][has], intent[has])
            # ---- end Translate-Intent
            # ---- CoV weighting (Eq. 2-3; dev. 1, 8, 10: absent or non-finite values: no sample)
            values = list(aux.values())
            if args.weighting == "cov":
                x = np.array([v.item() for v in values])
                weights = cov.update(x, np.isfinite(x) & [some or a == "ca" for a in args.aux])
            loss = loss_task + sum(float(w) * v for w, v in zip(weights, values))  # Eq. 2
            # ---- end CoV weighting
            if not torch.isfinite(loss) and not scaler.is_enabled():  # fp16: the scaler skips it
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()} (task "
                                 f"{loss_task.item()}, aux {[v.item() for v in values]}); stopping")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # fp16: a scaled loss keeps small gradients from 0
            scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scale = scaler.get_scale()
            scaler.step(opt)  # fp16: skipped when a gradient overflowed
            scaler.update()
            skipped += scaler.is_enabled() and scaler.get_scale() < scale  # the scale fell: skipped
            sched.step()
            step, seen = step + 1, seen + B * world
            sums += torch.stack([torch.ones((), device=device), loss_task, loss, *values]).detach()
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                parts = " ".join(f"{a} {v.item():.4f} (w {w:.3g})" for a, v, w in zip(args.aux,
                                 values, weights)) + (f" | skipped {skipped}" if skipped else "")
                common.log(f"step {step}/{total} epoch {epoch} | task {loss_task.item():.4f} | "
                           f"{parts} | lr {sched.get_last_lr()[0]:.2e} | {seen / el:.1f} ex/s | "
                           f"eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        t_train += time.time() - t0
        if ddp:  # the epoch's losses over every process's examples, not rank 0's alone
            dist.all_reduce(sums)
        if main_rank:
            dev = {x: common.evaluate(model, *evals[x]["dev"], labels, tok.pad_token_id, device,
                                      autocast) for x in evals}
            mean = (sums[1:] / sums[0]).tolist()
            history.append({"epoch": epoch, "train_task_loss": mean[0], "train_total_loss": mean[1],
                            "train_aux_loss": dict(zip(args.aux, mean[2:])),
                            "aux_weights": dict(zip(args.aux, map(float, weights))), "dev": dev})
            common.log_metrics(f"epoch {epoch} dev", dev)
            score = sum(dev[x][key] for x in watch) / len(watch)
            if args.select_on != "last" and (best is None or score > best[0]):
                best = (score, epoch, {k: v.detach().to("cpu", copy=True)
                                       for k, v in model.state_dict().items()})
        if ddp:
            dist.barrier()
        if step >= total:
            break
    # the reported model: test in every language, results.json
    metrics = None
    if main_rank:
        if best is not None:
            common.log(f"restoring epoch {best[1]} (best {args.select_on} dev {key} {best[0]:.2f})")
            model.load_state_dict(best[2])
        picked = best[1] if best else epoch
        dev = next(h["dev"] for h in history if h["epoch"] == picked)  # evaluation is deterministic
        metrics = {x: {"dev": dev[x], "test": common.evaluate(
            model, *evals[x]["test"], labels, tok.pad_token_id, device, autocast)} for x in evals}
        common.log_metrics("final", metrics)
        path = common.save_results(
            out_dir, method, settings, metrics, __file__, history=history, selected_epoch=picked,
            peak_memory_mb=common.peak_memory_mb(device), steps=step, world_size=world, dtype=dtype,
            skipped_steps=int(skipped), train_examples_seen=seen, wall_s=time.time() - t_start,
            train_examples_per_s=seen / max(t_train, 1e-9), aux=args.aux, weighting=args.weighting,
            final_aux_weights=dict(zip(args.aux, map(float, weights))))
        common.log(f"wrote {path}")
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main()
