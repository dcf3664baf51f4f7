"""Contrastive alignment: InfoNCE between English utterances and their translations, on XLM-R.

Paper: Gritta, Hu & Iacobacci (2022), "CrossAligner & Co: Zero-Shot Transfer Methods for
       Task-Oriented Cross-lingual Natural Language Understanding", Findings of ACL 2022, section
       3.2 (Eq. 1, Algorithm 2). https://arxiv.org/abs/2203.09982
Reference code: huawei-noah/noah-research @ aa0f80c, NLP/cross_aligner/train.py (the contrastive
       branch of the auxiliary losses), config/*.sh (hyperparameters).

Usage:
    python contrastive.py --data mtop --lang th --model xlm-roberta-large
    python contrastive.py --data pawsx --lang de --model xlm-roberta-large --pooling mean
    python contrastive.py --data demo --model tiny                     # the demo: CPU, < 1 min
    torchrun --nproc_per_node 4 contrastive.py --data mtop --lang th   # one process per GPU

The method, in one line: train the task on English and, at every step, make each English sentence
vector pick out its own translation's among the batch's translations (InfoNCE, Eq. 1):

    L = L_task(English) + L_ctr,   L_ctr = 1/N sum_i -log softmax_k( cos(e_i, t_k) / tau )[i]

Sibling of xeroalign.py: this file is xeroalign.py with the MSE of the sentence vectors replaced by
the loss above (the fenced lines of the loop), the flags --temperature, --symmetric and --pooling
added, and the aligned configs' defaults (batch 10 everywhere, so nine in-batch negatives).

What the paper says, what the official code does, and what we do (the deviations, cited
in the code as "dev. N"):
  1. Pairs. Paper (Algorithm 2) and code: each English training example with its own translation;
     the other N-1 translations of the batch are its negatives. Ours: the same; the English vector
     comes from the task forward pass, English and translations in one batched forward pass.
  2. Loss. Cosine similarity, no temperature, English -> target only, weight 1, no stop-gradient:
     paper and code agree; so do our defaults. --temperature and --symmetric are variants.
  3. "CLS". Paper: the first token's state. Code: the pooler output tanh(W h_<s> + b). Ours: --cls
     pooler (the code) by default, --cls first for the paper's wording; --pooling mean scores
     mask-averaged token states instead, the variant the paper reports in section 5.1.
  4. Padding. Code: every input padded to max_seq_len with no attention mask, so pad tokens are
     attended to (and averaged by the mean-pooled variant). Ours: per-batch padding with an
     attention mask; --max_len only caps the length.
  5. Optimisation. Adam (no weight decay) with OneCycleLR at PyTorch's defaults, gradients clipped
     at 1.0: as the code. Batch 10 in one step, as the aligned configs. --head_lr puts the new
     linear heads in their own group (default: the same lr, as the code).
  6. Defaults per dataset (in --help, from config/*.sh): MTOD 5e-6 and 5 epochs as the code (the
     paper's text says 1e-5). MASSIVE, PAWS-X and XNLI are not in the paper: MTOP's settings, and
     for the pair tasks XeroAlign's PAWS-X lr and max_len; the demo's suit --model tiny.
  7. Labels. IO training with BIO restored at evaluation, as the paper's models; we label and score
     only the first subword of each word.
  8. Selection. Final epoch by default (the code has no model selection); --select_on en is the
     strict zero-shot protocol.
  9. Several target languages. The paper aligns one language per run. With --lang de,es,fr each
     training example is paired with a translation drawn at random from its languages at every step.
 10. Precision. The code trains in fp32. Ours: --dtype auto = bf16 autocast on GPUs that have it,
     else fp16 autocast with a GradScaler on a GPU, fp32 on the CPU; the loss is computed in fp32.

Shapes: B batch of English examples, T subwords, d hidden size, C classes, S slot tags.
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

# The paper's settings per dataset, its aligned configs (NLP/cross_aligner/config/*.sh): peak lr,
# epochs, max subwords, batch 10 x 1 (nine in-batch negatives). Not in the paper (dev. 6): massive
# (MTOP's settings), pawsx and xnli (the lr and max_len of XeroAlign's PAWS-X config); demo is
# tuned for --model tiny (a random encoder needs a far larger lr than a pretrained one).
PAPER = {
    "mtop": dict(lr=2e-5, epochs=10, max_len=70, batch_size=10),
    "mtod": dict(lr=5e-6, epochs=5, max_len=50, batch_size=10),
    "matis": dict(lr=2e-5, epochs=10, max_len=100, batch_size=10),
    "massive": dict(lr=2e-5, epochs=10, max_len=100, batch_size=10),
    "pawsx": dict(lr=6e-6, epochs=10, max_len=200, batch_size=10),
    "xnli": dict(lr=6e-6, epochs=10, max_len=200, batch_size=10),
    "demo": dict(lr=2e-3, epochs=12, max_len=64, batch_size=10),
}


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
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"settings per --data (the paper's aligned configs):\n{table}")
    per_data = "(default: per --data, below)"
    # --- run (the same flags in every method file)
    p.add_argument("--data", choices=list(PAPER), default="demo", help="dataset (default: demo)")
    p.add_argument("--lang", default="de", help="target language(s): th, de,es,fr or all "
                   "(every language of --data) (default: de)")
    p.add_argument("--model", default="xlm-roberta-large", help="HF hub name or local folder; tiny "
                   "builds a small random encoder and tokenizer on the data, offline "
                   "(default: xlm-roberta-large)")
    p.add_argument("--data_dir", help="dataset folder in its official layout "
                   "(default: data/<data>)")
    p.add_argument("--train_lang", default="en", help="language of the labelled training data; a "
                   "target language gives the 'Target' upper bound (default: en)")
    p.add_argument("--epochs", type=at_least(1), help=f"training epochs {per_data}")
    p.add_argument("--batch_size", type=at_least(1), help=f"batch size, all processes {per_data}")
    p.add_argument("--lr", type=positive, help=f"peak learning rate of the encoder {per_data}")
    p.add_argument("--max_len", type=at_least(8), help=f"max subwords per input {per_data}")
    p.add_argument("--seed", type=int, default=123456789, help="random seed (default: 123456789, "
                   "the official code's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="autocast precision; auto: bfloat16 on GPUs that have it, else float16 "
                   "with a GradScaler on a GPU, float32 on the CPU (default: auto)")
    p.add_argument("--threads", type=at_least(0), default=0, help="CPU threads of torch (default: "
                   "0, torch's choice)")
    p.add_argument("--out_dir", help="where results.json goes (default: runs/<method>/<data>-"
                   "<lang>-<train_lang>-<model>-s<seed>[-steps<N>][-n<limit_train>])")
    p.add_argument("--overwrite", action="store_true", help="replace a results.json made by "
                   "another script, other code or other settings")
    p.add_argument("--max_steps", type=at_least(0), default=0, help="stop after N optimizer steps "
                   "(default: 0, no cap)")
    p.add_argument("--limit_train", type=at_least(0), default=0, help="train on a fixed random "
                   "subset of N examples, the same for every seed and method (default: 0, all)")
    p.add_argument("--max_eval", type=at_least(0), default=0, help="evaluate on a fixed subset of "
                   "N examples of each dev and test set, for smoke runs (default: 0, all)")
    p.add_argument("--select_on", choices=["last", "en", "target"], default="last", help="the "
                   "epoch reported: the final one (as the official code), best English dev or best "
                   "target dev (default: last)")
    p.add_argument("--log_every", type=at_least(1), default=50, help="progress line every N steps "
                   "(default: 50)")
    p.add_argument("--dev_halves", action="store_true", help="pawsx/xnli without train sets: train "
                   "on half of the row-parallel dev pairs, dev and test on quarters of the rest")
    # --- method
    p.add_argument("--align", action=argparse.BooleanOptionalAction, default=True,
                   help="add the contrastive loss; --no-align: zero-shot baseline, all else equal")
    p.add_argument("--temperature", type=positive, default=1.0, help="softmax temperature tau; 1 "
                   "is Eq. 1 and the official code, which have none (default: 1.0)")
    p.add_argument("--symmetric", action="store_true", help="also score each translation against "
                   "the English sentences and average both directions (Eq. 1 and the code: English "
                   "-> target only)")
    p.add_argument("--pooling", choices=["cls", "mean"], default="cls", help="sentence vector of "
                   "the loss: the CLS vector (see --cls) or mask-averaged token states (dev. 3) "
                   "(default: cls)")
    p.add_argument("--cls", choices=["pooler", "first"], default="pooler", help="sentence vector: "
                   "the pooler output (official code) or the first token's state (paper text) "
                   "(default: pooler)")
    p.add_argument("--head_lr", type=positive, help="peak lr of the new linear heads (default: "
                   "--lr, as the code); multilingual-e5, whose first-token state barely varies, "
                   "needs about 1e-2")
    first = p.parse_known_args(argv)[0]
    p.set_defaults(**PAPER[first.data])  # the paper's values for --data; flags given win
    args = p.parse_args(argv)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        p.error(f"--device {args.device}: expected auto, cpu, cuda or cuda:N")
    if args.lang != "all" and any(not x.strip() for x in args.lang.split(",")):
        p.error(f"--lang {args.lang!r}: an empty language code; give codes separated by commas")
    if args.align and args.train_lang != "en":
        p.error("alignment pairs English training data with its translations: use --no-align "
                "with --train_lang")
    return args


# ---------------------------------------------------------------------------- loss

METHOD = "contrastive"  # the method's name in results.json and the default --out_dir


def contrastive_loss(emb_src, emb_tgt, temperature=1.0, symmetric=False):
    """Contrastive alignment, InfoNCE with in-batch negatives (section 3.2, Eq. 1):

        l_i = -log( exp(sim(e_i, t_i) / tau) / sum_{k=1..N} exp(sim(e_i, t_k) / tau) )
        L_ctr = 1/N sum_i l_i,      sim(u, v) = u.v / (||u|| ||v||)

    emb_src (N, d): English sentence vectors; emb_tgt (N, d): their translations, row i translating
    row i; the other N-1 rows are the negatives. symmetric=True averages this with the same loss
    from the translations' side (t_i against every e_k). Returns a scalar."""
    sim = (F.normalize(emb_src.float(), dim=-1) @ F.normalize(emb_tgt.float(), dim=-1).T
           / temperature)
    labels = torch.arange(len(sim), device=sim.device)
    loss = F.cross_entropy(sim, labels)
    return (loss + F.cross_entropy(sim.T, labels)) / 2 if symmetric else loss


def mean_pool(h_tok, attention_mask):
    """Average of the token states over real (unmasked) tokens: (B, T, d), (B, T) -> (B, d)."""
    m = attention_mask.unsqueeze(-1).to(h_tok.dtype)
    return (h_tok * m).sum(1) / m.sum(1).clamp(min=1)


# ---------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    method = METHOD if args.align else "zeroshot" if args.train_lang == "en" else "target"
    data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else
                                 f"data/{args.data}")
    out_dir = args.out_dir or common.default_out_dir(method, args)
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
        raise SystemExit(f"error: --batch_size {args.batch_size}: not divisible by {world} "
                         "processes")
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
    # precision: bf16 has fp32's range, so it needs no loss scaling; fp16 does (GradScaler)
    dtype = args.dtype if args.dtype != "auto" else "float32" if device.type != "cuda" else \
        "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    autocast = contextlib.nullcontext() if dtype == "float32" else \
        torch.autocast(device.type, dtype=getattr(torch, dtype))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")  # off: a no-op
    common.check_out_dir(settings, __file__)  # before loading: a bad --out_dir fails now, not later
    common.log(f"{method} | device {device} | dtype {dtype} | processes {world}\nargs {settings}")

    # data: English (or --train_lang) examples, their translations for alignment, dev/test sets
    try:
        langs, train, trans, evals = common.load_task(
            args.data, data_dir, args.lang, args.train_lang, args.limit_train, args.align,
            args.dev_halves, args.max_eval)
        enc, tok = common.load_encoder(args.model, common.texts_of(train, trans, evals), out_dir,
                                       args.max_len)
        labels = common.Labels.from_train(args.data, train)
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

    # model: encoder + linear heads; Adam + OneCycleLR at PyTorch's defaults, gradients clipped at
    # 1.0 (deviation 5); the fused Adam kernel updates every tensor in one pass, same result
    model = common.TaskModel(enc, len(labels.intents), len(labels.slots), args.cls).to(device)
    opt = torch.optim.Adam(model.param_groups(args.lr, head_lr), lr=args.lr,
                           fused=device.type in ("cpu", "cuda"))
    total = args.epochs * len(loader)
    total = min(total, args.max_steps) if args.max_steps else total
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[args.lr, head_lr], total_steps=total)
    net = model if not ddp else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None)  # averages the gradients

    # training, with dev evaluation after every epoch; --select_on keeps the best epoch's weights.
    # A batch b holds B English examples and their translations, all padded to the longest of
    # them (T): input_ids and attention_mask (B, T), intent (B,), slot_labels (B, T) with a word's
    # tag on its first subword and -100 (ignored by the loss) on every other position; and, for
    # alignment, one translation per example, drawn at random (Python's `random`, seeded above)
    # from its --lang languages at every step: tgt_input_ids, tgt_attention_mask (B, T), has_tgt
    # (B,) False where an example has no translation (its row is all padding, left out of the
    # alignment loss).
    # Sentence pairs (pawsx, xnli): intent is the class label, no slot_labels, and a BERT-style
    # tokenizer adds token_type_ids (segment 0/1, and tgt_token_type_ids).
    # net(ids, mask, types) returns (sentence vector "CLS" (N, d), intent logits (N, C),
    # slot logits (N, T, S) or None, token states (N, T, d)) for the N rows it is given.
    key = "exact_match" if args.data in common.INTENT_SLOT else "accuracy"
    watch = ["en"] if args.select_on == "en" else [x for x in langs if x != "en"] or ["en"]
    history, best = [], None  # best: (dev score, epoch, weights on the CPU)
    step, seen, skipped, t_train, t_start = 0, 0, 0, 0.0, time.time()
    for epoch in range(1, args.epochs + 1):
        if ddp:
            loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every process
        t0, sums = time.time(), torch.zeros(3, device=device)  # task, align, steps: sums
        for b in loader:
            B = len(b["intent"])
            ids, mask, types = b["input_ids"], b["attention_mask"], b.get("token_type_ids")
            # ---- Contrastive: English and translations through the encoder in one pass (dev. 1)
            if args.align:
                ids = torch.cat([ids, b["tgt_input_ids"]])
                mask = torch.cat([mask, b["tgt_attention_mask"]])
                types = None if types is None else torch.cat([types, b["tgt_token_type_ids"]])
            # ---- end Contrastive
            ids, mask = ids.to(device), mask.to(device)
            types = None if types is None else types.to(device)
            with autocast:
                cls, logits, slot_logits, h_tok = net(ids, mask, types)
            # the task loss, English rows only: CE(intent) + CE(slot tags), summed, as the code
            loss_task = common.task_loss(logits[:B], b["intent"],
                                         None if slot_logits is None else slot_logits[:B],
                                         b.get("slot_labels"))
            # ---- Contrastive: each English vector against the batch's translations (dev. 1-2)
            loss_align = torch.zeros((), device=device)
            if args.align and b["has_tgt"].any():  # examples without a translation: not aligned
                # a slice when every row has one: boolean indexing would sync the GPU
                has = slice(None) if b["has_tgt"].all() else b["has_tgt"].to(device)
                emb = cls if args.pooling == "cls" else mean_pool(h_tok, mask)  # dev. 3
                loss_align = contrastive_loss(emb[:B][has], emb[B:][has], args.temperature,
                                              args.symmetric)
            loss = loss_task + loss_align  # Algorithm 2 line 6: L_ic + L_ec + L_cl
            # ---- end Contrastive
            if not torch.isfinite(loss) and not scaler.is_enabled():  # fp16: the scaler skips it
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()} (task "
                                 f"{loss_task.item()}, align {loss_align.item()}); stopping")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # fp16: a scaled loss keeps small gradients from 0
            scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scale = scaler.get_scale()
            scaler.step(opt)  # fp16: skipped when a gradient overflowed
            scaler.update()
            skipped += scaler.is_enabled() and scaler.get_scale() < scale  # the scale fell: skipped
            sched.step()  # also after a skipped fp16 step: the schedule keeps its length
            step, seen = step + 1, seen + B * world
            sums += torch.stack([loss_task.detach(), loss_align.detach(),
                                 torch.ones((), device=device)])
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | task {loss_task.item():.4f} align "
                           f"{loss_align.item():.4f} | lr {sched.get_last_lr()[0]:.2e} | "
                           f"{seen / el:.1f} ex/s | eta {el / step * (total - step) / 60:.1f} min"
                           + (f" | skipped {skipped}" if scaler.is_enabled() else ""))
            if step >= total:
                break
        t_train += time.time() - t0
        if ddp:  # the epoch's losses over every process's examples, not rank 0's alone
            dist.all_reduce(sums)
        if main_rank:
            dev = {x: common.evaluate(model, *evals[x]["dev"], labels, tok.pad_token_id, device,
                                      autocast) for x in evals}
            history.append({"epoch": epoch, "train_task_loss": (sums[0] / sums[2]).item(),
                            "train_align_loss": (sums[1] / sums[2]).item(), "dev": dev})
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
            peak_memory_mb=common.peak_memory_mb(device), steps=step, world_size=world,
            dtype=dtype, skipped_steps=int(skipped), train_examples_seen=seen,
            train_examples_per_s=seen / max(t_train, 1e-9), wall_s=time.time() - t_start)
        common.log(f"wrote {path}")
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main()
