"""CrossAligner & Co: auxiliary alignment losses for zero-shot task-oriented NLU, on XLM-R.

Paper: Gritta, Hu & Iacobacci (2022), "CrossAligner & Co: Zero-Shot Transfer Methods for
       Task-Oriented Cross-lingual Natural Language Understanding", Findings of ACL 2022.
       https://arxiv.org/abs/2203.09982
Reference code: huawei-noah/noah-research @ aa0f80c, NLP/cross_aligner/train.py (auxiliary losses,
       CoV weighting), xlm_ra.py (CrossAligner head), alignment.py (multi-hot targets), config/*.sh.

Usage:
    python crossaligner.py --data mtop --lang th --model xlm-roberta-large
    python crossaligner.py --data mtop --lang th --model xlm-roberta-large --aux ca xa --weighting cov
    python crossaligner.py --data demo --lang de --model tiny --aux ca xa ctr ti          # CPU, < 1 min

What this file adds to common.py: four auxiliary losses on (English, translation) pairs of the same
batch (CrossAligner, XeroAlign, Contrastive, Translate-Intent), the CrossAligner head, CoV loss
weighting, and the loop that adds the weighted auxiliary losses to the English task loss.
`--aux` with no names is the zero-shot baseline, everything else equal.

Where the paper and the official code disagree, and what we follow:
  1. CoV weights (Eq. 3). Paper: w = std/mean of the loss-ratio history up to and including step t.
     Code: the statistics of steps < t plus eps = 1e-8 under the square root, so every weight is
     exactly 1e-4 at step 2. We follow the paper; see `CoVWeighting`. Both leave the weights
     unnormalised and detached.
  2. CrossAligner input. The code pads inputs to max_seq_len and passes no attention mask, so the
     head also reads the entity logits of pad tokens. We pad per batch with a mask, then pad the
     logits to --max_len and zero every padding position: the head sees the same width, and a
     sentence gets the same CA loss whatever the batch's length (see `crossaligner_loss`).
  3. MTOD. The paper says lr and epochs are 50% lower there (1e-5, 5 epochs); the code's config uses
     5e-6 and 5 epochs. We default to the code's.
  4. "CLS" is the pooler output (the code) by default; --cls first gives the first token's state.
  5. Batch 10 in one step, as the aligned configs; the translations are those of the batch itself.
  6. CrossAligner target (Algorithm 1, TRANSFORMLABELS): the multi-hot vector of the slot tags in the
     English utterance, O included (as Algorithm 1 and alignment.py); BCE on the English utterance
     and on its translation, summed. The intent, entity and CrossAligner heads are shared across
     languages, so --max_len, the CA head's width, is a model hyperparameter here.
  7. The other losses, as the code: contrastive (Eq. 1) with cosine similarity, no temperature,
     English to target only, in-batch negatives; XeroAlign, the MSE of the sentence vectors;
     Translate-Intent, the shared intent head on the translation with the English intent.
  8. CoV weights are not bounded by 1: a loss that starts near 0 and grows (XeroAlign on a fresh
     pooler) gets a large weight. Final weights go to results.json (final_aux_weights), per-epoch
     ones to history. In a batch without translations XA/CTR/TI are absent and enter no statistic.
  9. Tagging: IO training with BIO restored at evaluation (every model in the paper); --tagging bio
     trains and scores BIO tags as they are (section 5.1's comparison).

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
import torch.nn as nn
import torch.nn.functional as F

import common

# The paper's settings per dataset, its aligned configs (NLP/cross_aligner/config/*.sh): peak lr, epochs,
# max subwords, batch 10 x 1. Intent and slot data only: the CrossAligner loss needs slot labels. massive
# is not in the paper (MTOP's settings); demo is tuned for --model tiny.
PAPER = {
    "mtop": dict(lr=2e-5, epochs=10, max_len=70, batch_size=10),
    "mtod": dict(lr=5e-6, epochs=5, max_len=50, batch_size=10),
    "matis": dict(lr=2e-5, epochs=10, max_len=100, batch_size=10),
    "massive": dict(lr=2e-5, epochs=10, max_len=100, batch_size=10),
    "demo": dict(lr=2e-3, epochs=12, max_len=64, batch_size=10),
}
AUX = ("ctr", "xa", "ca", "ti")  # the official code's order, which the weight vector follows


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
    p.add_argument("--aux", nargs="*", choices=AUX, default=["ca"], help="auxiliary losses: ca CrossAligner, xa "
                   "XeroAlign, ctr contrastive, ti Translate-Intent; --aux alone (no names) is the zero-shot "
                   "baseline, all else equal (default: ca)")
    p.add_argument("--weighting", choices=["sum", "cov"], default="sum", help="combine the auxiliary losses with "
                   "weight 1 each (the paper's 1+1) or with CoV weights (Eq. 2-3) (default: sum)")
    p.add_argument("--tagging", choices=["io", "bio"], default="io", help="slot tags trained: IO, with BIO "
                   "restored at evaluation (every model in the paper), or BIO (section 5.1) (default: io)")
    p.add_argument("--cls", choices=["pooler", "first"], default="pooler", help="sentence vector of xa, ctr, ti: "
                   "the pooler output (official code) or the first token's state (paper text) (default: pooler)")
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
    if args.aux and args.train_lang != "en":
        p.error("the auxiliary losses pair English training data with its translations: use --aux (none) with "
                "--train_lang")
    args.aux = [a for a in AUX if a in args.aux]  # the official code's order (the weights' order), no repeats
    return args


# ---------------------------------------------------------------------------- losses


def slot_presence(slot_labels, n_slots):
    """Algorithm 1, TRANSFORMLABELS: y_ca[s] = 1 if tag s labels any word of the utterance, else 0
    (a multi-hot vector; frequency is ignored). slot_labels: (B, T) tag ids, -100 where no label.
    'O' counts as a tag, as in Algorithm 1 and the official alignment.py. Returns (B, S) float."""
    hot = F.one_hot(slot_labels.clamp(min=0), n_slots) * (slot_labels >= 0).unsqueeze(-1)
    return hot.amax(dim=1).float()


def crossaligner_loss(slot_logits, attention_mask, y_ca, head, max_len):
    """CrossAligner loss of one view (Algorithm 1 lines 22-26 for English, 28-31 for the target):

        pred = CA( reshape( EC(tokens) ) to (L * S) ),   L_view = BCE(sigmoid(pred), y_ca)

    mean over B x S. The entity logits are zeroed at padding and padded with zeros to L rows, so
    the head always reads L * S numbers (deviation 2 above). Called on the English utterances and on
    their translations, both against the English y_ca; the two are summed (Algorithm 1 line 32).
    slot_logits (B, T, S), attention_mask (B, T), y_ca (B, S), head: nn.Linear(L * S, S)."""
    B, T, S = slot_logits.shape
    x = slot_logits.float() * attention_mask.unsqueeze(-1)
    x = F.pad(x, (0, 0, 0, max_len - T))  # (B, L, S)
    return F.binary_cross_entropy_with_logits(head(x.reshape(B, max_len * S)), y_ca)


def xeroalign_loss(cls_src, cls_tgt):
    """XeroAlign (Gritta & Iacobacci 2021, sim = MSE): L_xa = 1/(B d) sum_i ||s_i - t_i||^2 between the
    sentence vectors of the English utterances and their translations, (B, d) each."""
    return F.mse_loss(cls_tgt.float(), cls_src.float())


def contrastive_loss(cls_src, cls_tgt, temperature=1.0):
    """Contrastive alignment (section 3.2, Eq. 1), InfoNCE with in-batch negatives:

        l_i = -log( exp(sim(e_i, t_i)/tau) / sum_k exp(sim(e_i, t_k)/tau) ),   L_ctr = mean_i l_i

    sim = cosine similarity; English row i's positive is translation i, the other N-1 are negatives.
    tau = 1 and English -> target only, as in the official code (Algorithm 2). (B, d) each."""
    sim = F.normalize(cls_src.float(), dim=-1) @ F.normalize(cls_tgt.float(), dim=-1).T / temperature
    return F.cross_entropy(sim, torch.arange(len(sim), device=sim.device))


def translate_intent_loss(intent_logits_tgt, intent_en):
    """Translate-Intent (section 3.3, Algorithm 3): the shared intent classifier on the translated
    utterance, trained with the English intent label. L_ti = CE(IC(cls_tar), y_ic). (B, C), (B,)."""
    return F.cross_entropy(intent_logits_tgt.float(), intent_en)


# ---------------------------------------------------------------------------- CoV weighting


class CoVWeighting:
    """Coefficient-of-Variation weights for the auxiliary losses (Groenendijk et al. 2021,
    arXiv:2009.01717), as the paper uses them (section 3.4, Eq. 2-3): unnormalised, main loss
    unweighted, weights detached (plain floats):

        l_{a,t} = L_{a,t} / mean(L_{a,1..t-1}),      w_{a,t} = std(l_{a,1..t}) / mean(l_{a,1..t})

    std is the population standard deviation over the ratio history including step t (deviation 1).
    At a loss's first step l = 1 and w = 1 (the 1+1 sum); a loss that never moves keeps l = 1, so its
    weight is 0. A step where a loss is absent (a batch without translations: XA/CTR/TI are a
    placeholder zero) enters none of its statistics, and it keeps its last weight. A history mean of
    0 gives l = 1, not a division by zero. Welford's online update: memory does not grow with t."""

    def __init__(self, n):
        self.t = np.zeros(n)  # steps at which each loss was present
        self.mean_loss = np.zeros(n)  # mean of L over those steps
        self.mean_ratio = np.zeros(n)  # mean of l over those steps
        self.m2_ratio = np.zeros(n)  # sum of squared deviations of l (Welford)
        self.weights = np.ones(n)

    def update(self, losses, present=None):
        """losses: the current auxiliary loss values (floats); present: which of them are real this
        step (default all). Returns this step's weights."""
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
        cov = np.sqrt(self.m2_ratio / t) / np.where(self.t > 0, self.mean_ratio, 1.0)  # ratios >= 0, mean > 0
        self.weights = np.where(on, np.where(self.t > 1, cov, 1.0), self.weights)
        return self.weights


# ---------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    method = "crossaligner" if args.aux else "zeroshot" if args.train_lang == "en" else "target"
    data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    name = "+".join(args.aux) + ("-" + args.weighting if len(args.aux) > 1 or args.weighting == "cov" else "") \
        if args.aux else method  # e.g. runs/crossaligner/xa+ca-cov/...
    out_dir = args.out_dir or common.default_out_dir(f"crossaligner/{name}", args)
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
    common.log(f"{method} | aux {args.aux or 'none'} | device {device} | bf16 autocast {bf16} | processes {world}"
               f"\nargs {settings}")

    # data: English (or --train_lang) examples, their translations for alignment, dev/test sets
    try:
        langs, train, trans, evals = common.load_task(args.data, data_dir, args.lang, args.train_lang,
                                                      args.limit_train, bool(args.aux), args.dev_halves)
        enc, tok = common.load_encoder(args.model, common.texts_of(train, trans, evals), out_dir, args.max_len)
        labels = common.Labels.from_train(args.data, train, args.tagging)
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
    S = len(labels.slots)
    model = common.TaskModel(enc, len(labels.intents), S, args.cls).to(device)  # intent (IC), entity (EC) heads
    model.ca_head = nn.Linear(args.max_len * S, S).to(device)  # the CrossAligner head (CA), section 3.1
    opt = torch.optim.Adam(model.param_groups(args.lr, head_lr), lr=args.lr, fused=device.type in ("cpu", "cuda"))
    total = args.epochs * len(loader)
    total = min(total, args.max_steps) if args.max_steps else total
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[args.lr, head_lr], total_steps=total)
    net = model if not ddp else \
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    cov = CoVWeighting(len(args.aux)) if args.weighting == "cov" else None
    weights = np.ones(len(args.aux))  # 1 + 1 unless --weighting cov

    # training, with dev evaluation after every epoch; --select_on keeps the best epoch's weights
    key = "exact_match" if args.data in common.INTENT_SLOT else "accuracy"
    watch = ["en"] if args.select_on == "en" else [x for x in langs if x != "en"] or ["en"]
    history, best = [], None  # best: (dev score, epoch, weights on the CPU)
    step, seen, t_train, t_start = 0, 0, 0.0, time.time()
    for epoch in range(1, args.epochs + 1):
        if ddp:
            loader.sampler.set_epoch(epoch)
        t0, sums = time.time(), torch.zeros(3 + len(args.aux), device=device)  # steps, task, total, each aux
        for b in loader:
            B = len(b["intent"])
            ids, mask = b["input_ids"], b["attention_mask"]
            if args.aux:  # English and translations through the encoder in one forward pass
                ids, mask = torch.cat([ids, b["tgt_input_ids"]]), torch.cat([mask, b["tgt_attention_mask"]])
            ids, mask, intent = ids.to(device), mask.to(device), b["intent"].to(device)
            with autocast:
                cls, intent_logits, slot_logits, _ = net(ids, mask)
            loss_task = common.task_loss(intent_logits[:B], intent, slot_logits[:B], b["slot_labels"].to(device))
            # rows with a translation (a slice when all have one: boolean indexing would sync the GPU)
            has = slice(None) if not args.aux or b["has_tgt"].all() else b["has_tgt"].to(device)
            some = bool(args.aux) and bool(b["has_tgt"].any())
            en, tg = slice(0, B), slice(B, 2 * B)
            zero, aux = torch.zeros((), device=device), {}
            if "ctr" in args.aux:
                aux["ctr"] = contrastive_loss(cls[en][has], cls[tg][has]) if some else zero
            if "xa" in args.aux:
                aux["xa"] = xeroalign_loss(cls[en][has], cls[tg][has]) if some else zero
            if "ca" in args.aux:  # Algorithm 1 lines 21-31: English and target views, English targets
                y_ca = slot_presence(b["slot_labels"].to(device), S)
                aux["ca"] = crossaligner_loss(slot_logits[en], mask[en], y_ca, model.ca_head, args.max_len) + \
                    (crossaligner_loss(slot_logits[tg][has], mask[tg][has], y_ca[has], model.ca_head, args.max_len)
                     if some else zero)
            if "ti" in args.aux:
                aux["ti"] = translate_intent_loss(intent_logits[tg][has], intent[has]) if some else zero
            values = [aux[a] for a in args.aux]
            if cov is not None:  # placeholder zeros (no translation in the batch) are not samples
                weights = cov.update([v.item() for v in values], [some or a == "ca" for a in args.aux])
            loss = loss_task + sum(float(w) * v for w, v in zip(weights, values))  # Eq. 2
            if not torch.isfinite(loss):  # stop before a NaN reaches the weights
                parts = ", ".join(f"{a} {v.item()}" for a, v in zip(args.aux, values))
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()} "
                                 f"(task {loss_task.item()}, {parts}); stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step, seen = step + 1, seen + B * world
            sums += torch.stack([torch.ones((), device=device), loss_task.detach(), loss.detach(),
                                 *[v.detach() for v in values]])
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | task {loss_task.item():.4f} | " + " ".join(
                    f"{a} {v.item():.4f} (w {w:.3g})" for a, v, w in zip(args.aux, values, weights)) +
                    f" | lr {sched.get_last_lr()[0]:.2e} | {seen / el:.1f} ex/s | "
                    f"eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        t_train += time.time() - t0
        if main_rank:
            dev = {x: common.evaluate(model, *evals[x]["dev"], labels, tok.pad_token_id, device, autocast)
                   for x in evals}
            mean = (sums[1:] / sums[0]).tolist()
            history.append({"epoch": epoch, "train_task_loss": mean[0], "train_total_loss": mean[1],
                            "train_aux_loss": dict(zip(args.aux, mean[2:])),
                            "aux_weights": dict(zip(args.aux, map(float, weights))), "dev": dev})
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
                                   wall_s=time.time() - t_start, aux=args.aux, weighting=args.weighting,
                                   final_aux_weights=dict(zip(args.aux, map(float, weights))))
        common.log(f"wrote {path}")
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main()
