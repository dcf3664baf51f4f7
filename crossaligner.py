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
     Code: the statistics of steps < t plus eps = 1e-8, so every weight is exactly 1e-4 at step 2.
     We follow the paper; see `CoVWeighting`. Both leave the weights unnormalised and detached.
  2. CrossAligner input. The code pads inputs to max_seq_len and passes no attention mask, so the
     head also reads the entity logits of pad tokens. We pad per batch with a mask, then pad the
     logits to --max_len and zero every padding position: the head sees the same width, and a
     sentence gets the same CA loss whatever the batch's length (see `crossaligner_loss`).
  3. MTOD. The paper says lr and epochs are 50% lower there (1e-5, 5 epochs); the code's config uses
     5e-6 and 5 epochs. We default to the code's.
  4. "CLS" is the pooler output (the code) by default; --cls first gives the first token's state.
  5. Batch 10 in one step, as the aligned configs; the translations are those of the batch itself.

Shapes: B batch, T subwords in the batch, L = --max_len, d hidden size, C intents, S slot tags.
"""
import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

# aligned configs of NLP/cross_aligner/config/*.sh (METHODS.md 2.6 table): batch 10 x 1. MASSIVE is
# not in the paper (MTOP settings); demo is tuned for --model tiny.
PAPER = {
    "mtop": dict(lr=2e-5, epochs=10, max_len=70),
    "mtod": dict(lr=5e-6, epochs=5, max_len=50),
    "matis": dict(lr=2e-5, epochs=10, max_len=100),
    "massive": dict(lr=2e-5, epochs=10, max_len=100),
    "demo": dict(lr=2e-3, epochs=12, max_len=64),
}
AUX = ("ctr", "xa", "ca", "ti")  # the official code's order, which the weight vector follows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=common.HelpFormatter)
    common.add_run_args(p)
    g = p.add_argument_group("method")
    g.add_argument("--aux", nargs="*", choices=AUX, default=["ca"],
                   help="auxiliary losses: ca CrossAligner, xa XeroAlign, ctr contrastive, ti Translate-Intent; "
                        "none (--aux with no names) is the zero-shot baseline")
    g.add_argument("--weighting", choices=["sum", "cov"], default="sum",
                   help="combine the auxiliary losses with weight 1 each (the paper's 1+1) or with CoV weights (Eq. 2-3)")
    g.add_argument("--tagging", choices=["io", "bio"], default="io",
                   help="slot tags trained: IO with BIO restored at evaluation (every model in the paper) or BIO (section 5.1)")
    g.add_argument("--cls", choices=["pooler", "first"], default="pooler",
                   help="sentence vector for xa/ctr/ti: pooler output (official code) or first token's state")
    g.add_argument("--head_lr", type=float, default=None, help="peak lr of the new heads (default: --lr, as the code)")
    args = p.parse_args(argv)
    if args.data not in PAPER:
        p.error(f"--data {args.data}: CrossAligner is for intent and slot data ({', '.join(PAPER)})")
    for k, v in dict(PAPER[args.data], batch_size=10).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.aux = [a for a in AUX if a in args.aux]  # canonical order, no repeats
    args.head_lr = args.head_lr or args.lr
    args.data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    name = "+".join(args.aux) + (f"-{args.weighting}" if len(args.aux) > 1 or args.weighting == "cov" else "") if args.aux else \
        "zeroshot" if args.train_lang == "en" else "target"
    args.out_dir = args.out_dir or common.default_out_dir(f"crossaligner/{name}", args)
    common.check_run_args(p, args)
    if args.aux and args.train_lang != "en":
        p.error("the auxiliary losses pair English training data with its translations: use --aux with --train_lang")
    return args


# ---------------------------------------------------------------------------- losses


def slot_presence(slot_labels, n_slots):
    """Algorithm 1, TRANSFORMLABELS: which slot tags occur in each utterance, as a multi-hot vector.

        y_ca[s] = 1 if tag s labels any word of the utterance, else 0      (frequency is ignored)

    slot_labels: (B, T) tag ids, -100 where no label. 'O' counts as a tag, as in Algorithm 1 and the
    official alignment.py (so y_ca['O'] is 1 for almost every utterance). Returns (B, S) float."""
    hot = F.one_hot(slot_labels.clamp(min=0), n_slots) * (slot_labels >= 0).unsqueeze(-1)
    return hot.amax(dim=1).float()


def crossaligner_loss(slot_logits, attention_mask, y_ca, head, max_len):
    """CrossAligner loss of one view (Algorithm 1 lines 22-26 for English, 28-31 for the target):

        pred = CA( reshape( EC(tokens) ) to (L * S) ),   L_view = BCE(sigmoid(pred), y_ca)

    mean over B x S. The entity classifier's logits (B, T, S) are zeroed at padding positions and
    padded with zeros to L = max_len rows before flattening, so the head always reads L * S numbers
    and a sentence's loss does not depend on how long the rest of its batch is. (The official code
    instead pads inputs to max_seq_len without an attention mask, so its head also sees the logits
    of attended pad tokens.) Called once on the English utterances and once on their translations,
    both against the English y_ca, and the two are summed, as in Algorithm 1 line 32.

    slot_logits (B, T, S), attention_mask (B, T), y_ca (B, S), head: nn.Linear(L * S, S)."""
    B, T, S = slot_logits.shape
    x = slot_logits.float() * attention_mask.unsqueeze(-1)
    x = F.pad(x, (0, 0, 0, max_len - T))  # (B, L, S)
    return F.binary_cross_entropy_with_logits(head(x.reshape(B, max_len * S)), y_ca)


def xeroalign_loss(cls_src, cls_tgt):
    """XeroAlign (Gritta & Iacobacci 2021), METHODS.md 2.3: L_xa = 1/(B d) sum_i ||s_i - t_i||^2
    between the sentence vectors of the English utterances and their translations, (B, d) each."""
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

    std is the population standard deviation over the ratio history including step t. Edge cases:
    at a loss's first step there is no history, l = 1 and w = 1 (the 1+1 sum); a loss that never
    changes keeps l = 1, so its weight is 0 from then on (CoV gives no weight to a loss that does
    not move). Each loss keeps its own history: a step where a loss is absent (a batch without
    translations, where XA/CTR/TI are a placeholder zero) is not a sample of that loss, so it
    enters no statistic and the loss keeps its last weight. A history mean of 0 (a loss that was
    exactly 0 whenever present) gives l = 1 rather than a division by zero.

    The official code (train.py) differs: it uses the ratio statistics of steps before t and adds
    eps = 1e-8 under the square root, so every weight is exactly 1e-4 at step 2. Statistics are
    kept with Welford's online update, so memory does not grow with t."""

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
        cov = np.sqrt(self.m2_ratio / t) / np.where(self.t > 0, self.mean_ratio, 1.0)  # ratios are >= 0, mean > 0
        self.weights = np.where(on, np.where(self.t > 1, cov, 1.0), self.weights)
        return self.weights


# ---------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    device, autocast, world = common.setup(args)
    ddp = world > 1
    common.log(f"crossaligner | aux {args.aux or 'none (zero-shot)'} | device {device} | "
               f"bf16 autocast {isinstance(autocast, torch.autocast)} | processes {world}\nargs {vars(args)}")

    langs, enc, tok, labels, items, evals = common.prepare(args, bool(args.aux), args.tagging)
    shard = (torch.distributed.get_rank(), world) if ddp else None
    loader = common.make_loader(items, args.batch_size // world, tok.pad_token_id, True, args.seed, shard)

    # model: encoder + intent (IC) and entity (EC) heads from common, plus the CrossAligner head (CA)
    S = len(labels.slots)
    model = common.TaskModel(enc, len(labels.intents), S, args.cls).to(device)
    model.ca_head = nn.Linear(args.max_len * S, S).to(device)  # [seq_len x n_slots, n_slots], section 3.1
    opt = torch.optim.Adam(model.param_groups(args.lr, args.head_lr), lr=args.lr, fused=device.type in ("cpu", "cuda"))
    total = args.epochs * len(loader)
    total = min(total, args.max_steps) if args.max_steps else total
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[args.lr, args.head_lr], total_steps=total)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if ddp else model
    cov = CoVWeighting(len(args.aux)) if args.weighting == "cov" else None

    selector = common.EpochSelector(args, langs, evals, labels, tok.pad_token_id, device, autocast, "exact_match") \
        if common.is_main() else None
    step, seen, t_train = 0, 0, 0.0
    weights = np.ones(len(args.aux))
    t_start = time.time()
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
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()} (task {loss_task.item()}, {parts}); stopping")
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
                common.log(f"step {step}/{total} epoch {epoch} | task {loss_task.item():.4f} | "
                           + " ".join(f"{a} {v.item():.4f} (w {w:.3g})" for a, v, w in zip(args.aux, values, weights))
                           + f" | lr {sched.get_last_lr()[0]:.2e} | {seen / el:.1f} ex/s | eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        t_train += time.time() - t0
        if common.is_main():
            mean = (sums[1:] / sums[0]).tolist()
            selector.epoch_end(model, epoch, train_task_loss=mean[0], train_total_loss=mean[1],
                               train_aux_loss=dict(zip(args.aux, mean[2:])),
                               aux_weights=dict(zip(args.aux, map(float, weights))))
        common.barrier()
        if step >= total:
            break

    final = None  # only rank 0 evaluates and writes results
    if common.is_main():
        final = selector.finish(
            model, "crossaligner" if args.aux else "zeroshot" if args.train_lang == "en" else "target", epoch,
            aux=args.aux, weighting=args.weighting, final_aux_weights=dict(zip(args.aux, map(float, weights))),
            steps=step, train_examples_seen=seen, train_examples_per_s=seen / max(t_train, 1e-9),
            wall_s=time.time() - t_start, world_size=world)
    common.barrier()
    if ddp:
        torch.distributed.destroy_process_group()
    return final


if __name__ == "__main__":
    main()
