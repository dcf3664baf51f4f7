"""Translate-Intent: the intent classifier also learns from translations, on XLM-R.

Paper: Gritta, Hu & Iacobacci (2022), "CrossAligner & Co: Zero-Shot Transfer Methods for
       Task-Oriented Cross-lingual Natural Language Understanding", Findings of ACL 2022, section 3.3
       (Algorithm 3). https://arxiv.org/abs/2203.09982
Reference code: huawei-noah/noah-research @ aa0f80c, NLP/cross_aligner/train.py (the TI branch of
       the auxiliary losses), config/*.sh (hyperparameters).

Usage:
    python translate_intent.py --data mtop --lang th --model xlm-roberta-large
    python translate_intent.py --data matis --lang hi,tr --model xlm-roberta-base --no-align    # zero-shot
    python translate_intent.py --data demo --lang de --model tiny                             # CPU, < 1 min

What this file adds to common.py: one loss, the shared intent classifier applied to the machine
translation of each English training utterance with the English intent as its label, and the loop
that adds it to the English task loss. Slots are trained on English only: the translations carry
no slot labels, so no label projection or word alignment is needed (that is the method's point).

Translate-Train, the baseline the paper compares with, trains on translated data with slot labels
projected through word alignment; we do not reimplement label projection. Compare Translate-Intent
with the zero-shot run (--no-align) and with the Target upper bound (--no-align --train_lang <lang>,
training on the target language's own labelled data) instead.

Paper and official code agree here: the intent head is shared between languages and reads the
pooler output (--cls first for the first token's state); loss weight 1.

Shapes: B batch of English examples, T subwords, d hidden size, C intents, S slot tags.
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

# The paper's settings per dataset, its aligned configs (NLP/cross_aligner/config/*.sh): peak lr, epochs,
# max subwords, batch 10 x 1. Intent and slot data only: sentence pairs have no intents. massive is not in
# the paper (MTOP's settings); demo is tuned for --model tiny.
PAPER = {
    "mtop": dict(lr=2e-5, epochs=10, max_len=70, batch_size=10),
    "mtod": dict(lr=5e-6, epochs=5, max_len=50, batch_size=10),
    "matis": dict(lr=2e-5, epochs=10, max_len=100, batch_size=10),
    "massive": dict(lr=2e-5, epochs=10, max_len=100, batch_size=10),
    "demo": dict(lr=2e-3, epochs=12, max_len=64, batch_size=10),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    # --- run (the same flags in every method file)
    p.add_argument("--data", choices=list(PAPER), default="demo", help="dataset (default: demo)")
    p.add_argument("--lang", default="de", help="target language(s): th, de,es,fr or all (default: de)")
    p.add_argument("--model", default="xlm-roberta-large", help="HF hub name or local folder; tiny builds a small "
                   "random encoder and tokenizer on the data, offline (default: xlm-roberta-large)")
    p.add_argument("--data_dir", help="dataset folder in its official layout (default: data/<data>)")
    p.add_argument("--train_lang", default="en", help="language of the labelled training data; a target "
                   "language gives the 'Target' upper bound (default: en)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the paper's for --data, PAPER)")
    p.add_argument("--batch_size", type=int, help="effective batch size over all processes (default: PAPER)")
    p.add_argument("--lr", type=float, help="peak learning rate of the encoder (default: PAPER)")
    p.add_argument("--max_len", type=int, help="max subwords per input (default: PAPER)")
    p.add_argument("--seed", type=int, default=123456789, help="random seed (default: the official code's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on CUDA only; "
                   "--amp also on CPU, --no-amp never)")
    p.add_argument("--out_dir", help="where results.json goes (default: runs/<method>/<data>-<lang>-<train_lang>-"
                   "<model>-s<seed>[-steps<N>][-n<limit_train>])")
    p.add_argument("--overwrite", action="store_true", help="replace a results.json made with other settings")
    p.add_argument("--max_steps", type=int, default=0, help="stop after N optimizer steps (default: 0, no cap)")
    p.add_argument("--limit_train", type=int, default=0, help="train on a fixed random subset of N examples, "
                   "the same for every seed and method (default: 0, all)")
    p.add_argument("--select_on", choices=["last", "en", "target"], default="last", help="the epoch reported: "
                   "the final one (as the official code), best English dev or best target dev (default: last)")
    p.add_argument("--log_every", type=int, default=50, help="progress line every N steps (default: 50)")
    p.add_argument("--dev_halves", action="store_true", help="pawsx/xnli without train sets: train on half of "
                   "the row-parallel dev pairs, dev and test on quarters of the rest")
    # --- method
    p.add_argument("--align", action=argparse.BooleanOptionalAction, default=True,
                   help="add the Translate-Intent loss; --no-align is the zero-shot baseline, all else equal")
    p.add_argument("--cls", choices=["pooler", "first"], default="pooler", help="what the intent head reads: the "
                   "pooler output (official code) or the first token's state (default: pooler)")
    p.add_argument("--head_lr", type=float, help="peak lr of the new linear heads (default: --lr, as the code); "
                   "multilingual-e5, whose first-token state barely varies, needs about 1e-2")
    first = p.parse_known_args(argv)[0]
    p.set_defaults(**PAPER[first.data])  # the paper's values for --data; flags given win
    args = p.parse_args(argv)
    for k in ("epochs", "batch_size", "max_len", "log_every"):
        if getattr(args, k) < 1:
            p.error(f"--{k} must be at least 1, got {getattr(args, k)}")
    if args.lr <= 0 or (args.head_lr is not None and args.head_lr <= 0) or args.max_steps < 0 or args.limit_train < 0:
        p.error("--lr and --head_lr must be positive, --max_steps and --limit_train 0 or positive")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        p.error(f"--device {args.device}: expected auto, cpu, cuda or cuda:N")
    if args.lang != "all" and any(not x.strip() for x in args.lang.split(",")):
        p.error(f"--lang {args.lang!r}: an empty language code; give codes separated by commas, e.g. de,es")
    if args.align and args.train_lang != "en":
        p.error("Translate-Intent pairs English training data with its translations: use --no-align with "
                "--train_lang")
    return args


# ---------------------------------------------------------------------------- loss


def translate_intent_loss(intent_logits_tgt, intent_en):
    """Translate-Intent (section 3.3, Algorithm 3 lines 2-3):

        L_ti = CE( IC(cls_tar), y_ic ) = -1/N sum_i log softmax(IC(cls_tar_i))[y_ic_i]

    intent_logits_tgt (N, C): the shared intent classifier's logits on the translated utterances;
    intent_en (N,): the English utterances' gold intents, copied to their translations."""
    return F.cross_entropy(intent_logits_tgt.float(), intent_en)


# ---------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    method = "translate_intent" if args.align else "zeroshot" if args.train_lang == "en" else "target"
    data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    out_dir = args.out_dir or common.default_out_dir(method, args)
    head_lr = args.head_lr or args.lr
    settings = {**vars(args), "data_dir": data_dir, "out_dir": out_dir, "head_lr": head_lr}  # as used

    # setup: the commit, seeds, device, bf16 autocast, and one process per GPU under torchrun
    common.git_commit()  # the commit this run starts from, for results.json
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ddp = world > 1
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: this torch ({torch.__version__}) sees no CUDA GPU")
    if args.batch_size % world:
        raise SystemExit(f"error: --batch_size {args.batch_size} must be divisible by the {world} processes")
    if ddp:
        if not dist.is_initialized():  # (already started when a test runs several mains in one process)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    main_rank = not ddp or dist.get_rank() == 0  # only rank 0 evaluates, logs and writes results
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    bf16 = args.amp if args.amp is not None else device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    common.check_out_dir(settings)  # never replace a results.json made with other settings
    common.log(f"{method} | device {device} | bf16 autocast {bf16} | processes {world}\nargs {settings}")

    # data: English (or --train_lang) examples, their translations for alignment, dev/test sets
    try:
        langs, train, trans, evals = common.load_task(args.data, data_dir, args.lang, args.train_lang,
                                                      args.limit_train, args.align, args.dev_halves)
        enc, tok = common.load_encoder(args.model, common.texts_of(train, trans, evals), out_dir, args.max_len)
        labels = common.Labels.from_train(args.data, train)
        items = common.train_items(tok, train, labels, trans, args.max_len, f"{args.data}/{args.train_lang}/train")
        evals = common.encode_evals(tok, evals, labels, args.max_len, args.data)
    except common.DataError as e:  # bad input: one line naming the file and line
        raise SystemExit(f"error: {e}") from None
    for note in common.notes():
        common.log(f"data note: {note}")
    common.log(f"train {len(items)} {args.train_lang} examples" + "".join(
        f", {lang}: {sum(t is not None for t in ts)} translations" for lang, ts in trans.items()))
    shard = (dist.get_rank(), world) if ddp else None  # each process reads its own 1/world of the data
    loader = common.make_loader(items, args.batch_size // world, tok.pad_token_id, True, args.seed, shard)

    # model: encoder + linear heads; Adam + OneCycleLR with PyTorch's defaults, gradients clipped at 1.0
    # (the official code); the fused Adam kernel updates every tensor in one pass, same result as the loop
    model = common.TaskModel(enc, len(labels.intents), len(labels.slots), args.cls).to(device)
    opt = torch.optim.Adam(model.param_groups(args.lr, head_lr), lr=args.lr, fused=device.type in ("cpu", "cuda"))
    total = args.epochs * len(loader)
    total = min(total, args.max_steps) if args.max_steps else total
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[args.lr, head_lr], total_steps=total)
    net = model if not ddp else \
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    # training, with dev evaluation after every epoch; --select_on keeps the best epoch's weights
    key = "exact_match" if args.data in common.INTENT_SLOT else "accuracy"
    watch = ["en"] if args.select_on == "en" else [x for x in langs if x != "en"] or ["en"]
    history, best = [], None  # best: (dev score, epoch, weights on the CPU)
    step, seen, t_train, t_start = 0, 0, 0.0, time.time()
    for epoch in range(1, args.epochs + 1):
        if ddp:
            loader.sampler.set_epoch(epoch)
        t0, sums = time.time(), torch.zeros(3, device=device)  # task, align, steps (no per-step sync)
        for b in loader:
            B = len(b["intent"])
            ids, mask, types = b["input_ids"], b["attention_mask"], b.get("token_type_ids")  # types: BERT pairs
            if args.align:  # English and translations through the encoder in one forward pass
                ids, mask = torch.cat([ids, b["tgt_input_ids"]]), torch.cat([mask, b["tgt_attention_mask"]])
                types = None if types is None else torch.cat([types, b["tgt_token_type_ids"]])
            ids, mask, types = ids.to(device), mask.to(device), None if types is None else types.to(device)
            with autocast:
                cls, logits, slot_logits, _ = net(ids, mask, types)
            loss_task = common.task_loss(logits[:B], b["intent"], None if slot_logits is None else slot_logits[:B],
                                         b.get("slot_labels"))
            loss_align = torch.zeros((), device=device)
            if args.align and b["has_tgt"].any():  # examples without a translation are not aligned
                # a slice when every row has one: boolean indexing would sync the GPU
                has = slice(None) if b["has_tgt"].all() else b["has_tgt"].to(device)
                loss_align = translate_intent_loss(logits[B:][has], b["intent"].to(device)[has])
            loss = loss_task + loss_align  # Algorithm 3 line 4: L_ic + L_ec + L_ti
            if not torch.isfinite(loss):  # stop before a NaN reaches the weights
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()} "
                                 f"(task {loss_task.item()}, align {loss_align.item()}); stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step, seen = step + 1, seen + B * world
            sums += torch.stack([loss_task.detach(), loss_align.detach(), torch.ones((), device=device)])
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | task {loss_task.item():.4f} align "
                           f"{loss_align.item():.4f} | lr {sched.get_last_lr()[0]:.2e} | {seen / el:.1f} ex/s | "
                           f"eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        t_train += time.time() - t0
        if main_rank:
            dev = {x: common.evaluate(model, *evals[x]["dev"], labels, tok.pad_token_id, device, autocast)
                   for x in evals}
            history.append({"epoch": epoch, "train_task_loss": (sums[0] / sums[2]).item(),
                            "train_align_loss": (sums[1] / sums[2]).item(), "dev": dev})
            common.log_metrics(f"epoch {epoch} dev", dev)
            score = sum(dev[x][key] for x in watch) / len(watch)
            if args.select_on != "last" and (best is None or score > best[0]):
                best = (score, epoch, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
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
        metrics = {x: {"dev": dev[x], "test": common.evaluate(model, *evals[x]["test"], labels, tok.pad_token_id,
                                                              device, autocast)} for x in evals}
        common.log_metrics("final", metrics)
        path = common.save_results(out_dir, method, settings, metrics, history=history, selected_epoch=picked,
                                   peak_memory_mb=common.peak_memory_mb(device), steps=step, world_size=world,
                                   train_examples_seen=seen, train_examples_per_s=seen / max(t_train, 1e-9),
                                   wall_s=time.time() - t_start)
        common.log(f"wrote {path}")
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main()
