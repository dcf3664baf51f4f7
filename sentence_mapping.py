"""Cross-lingual mapping of sentence embeddings, and zero-shot STS, on XLM-R.

Paper: Choi, Kim, Joe, Min & Gwon (2020), "Analyzing Zero-shot Cross-lingual Transfer in Supervised
       NLP Tasks", ICPR 2020, sections II.B-C, III.A and III.D (Tables I and IV).
       https://arxiv.org/abs/2101.10649
Reference code: none published.

Usage:
    python sentence_mapping.py --lang ko,de,es --model xlm-roberta-large --data_dir data/sts
    python sentence_mapping.py --lang ko --arch cross                     # Table I's cross-encoder
    python sentence_mapping.py --lang ko --arch none                      # pretrained encoder only
    python sentence_mapping.py --lang de --pairs train.en train.de        # mappings fitted on other bitext
    python sentence_mapping.py --lang ko --model tiny --data_dir tests/fixtures/sts   # CPU, seconds

What one run does:
  1. STS fine-tuning on --train_lang's train set (STS-B for en, KorSTS for ko), unless --arch none:
     --arch bi: a siamese bi-encoder (Sentence-BERT), the cosine of the two mean-pooled sentence
       embeddings regressed onto score/5 with MSE. This is what a mapping can be applied to.
     --arch cross: the paper's GLUE setting, `A </s></s> B` through the encoder and a regression
       head (dense-tanh-linear on <s>, as RobertaClassificationHead) on the raw 0-5 score, MSE.
     RAdam, lr 4e-5, linear warm-up over 10% of the steps then linear decay, 4 epochs, batch 32.
  2. Zero-shot STS: Spearman and Pearson (in percent) on the test sets of English and every --lang.
  3. Mapping (bi and none): sentence embeddings (mask-averaged last layer, the paper's choice) of
     the row-parallel train split (STS-B and its translation) fit three maps from English (S_A) to
     the target language (S_B): normal_equation, procrustes, fit_linear. On the held-out test split:
     the average cosine of translated pairs before and after mapping (the paper's measure) and
     bitext retrieval accuracy in both directions (a stricter one).
  4. Cross-lingual STS (Table IV): sentence1 in English, sentence2 in the target language (the
     same rows of the parallel test sets), scored unmapped and with each mapping (bi, none), or by
     the cross-encoder directly (cross).

Paper vs this file. The paper's Procrustes formula, U V^T from SVD(S_B S_A^T), does not fit the
shapes (S_B S_A^T is n x n); we use the standard U S V^T = SVD(S_A^T S_B), d x d. The paper does not
say whether embeddings are centred or normalised before mapping: we use them as they are (and so
the mean cosine after an orthogonal map is not higher by construction). The linear net is "SA W =
SB" with MSE: a bias-free nn.Linear trained by SGD. Which embeddings Table IV maps (pretrained or
fine-tuned) is not stated: we map the embeddings of the encoder being evaluated.

Shapes: n sentences, d hidden size, B batch, T subwords.
"""
import argparse
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

MAPPINGS = ("normal_equation", "procrustes", "fit_linear")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=common.HelpFormatter)
    common.add_run_args(p, datasets=("sts", "demo"), default_data="sts")
    g = p.add_argument_group("method")
    g.add_argument("--arch", choices=["bi", "cross", "none"], default="bi",
                   help="STS model: siamese bi-encoder, cross-encoder (the paper's GLUE run), or none (pretrained encoder, no fine-tuning)")
    g.add_argument("--direction", choices=["en2x", "x2en"], default="en2x",
                   help="map English embeddings into the target language's space (the paper) or the reverse")
    g.add_argument("--ridge", type=float, default=0.0, help="normal equation ridge term lambda (0: the paper's plain least squares)")
    g.add_argument("--map_epochs", type=int, default=100, help="fit_linear: SGD epochs")
    g.add_argument("--map_lr", type=float, default=0.5, help="fit_linear: SGD step size relative to the mean squared embedding norm (momentum 0.9, batch 256)")
    g.add_argument("--pairs", nargs="+", default=None, metavar="FILE",
                   help="fit the mappings on this bitext instead of the STS train split: SRC TGT line-aligned files "
                        "or one src<TAB>tgt file (English first; one --lang)")
    g.add_argument("--warmup", type=float, default=0.1, help="fraction of steps with linear lr warm-up")
    args = p.parse_args(argv)
    for k, v in dict(epochs=4, batch_size=32, lr=4e-5, max_len=128).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    args.out_dir = args.out_dir or common.default_out_dir(f"sentence_mapping/{args.arch}", args)
    common.check_run_args(p, args)
    if args.dev_halves:
        p.error("--dev_halves is for pawsx/xnli; STS has train sets")
    if args.pairs and (len(args.pairs) > 2 or "," in args.lang):
        p.error("--pairs takes one tab-separated file or two line-aligned files, for a single --lang")
    return args


# ---------------------------------------------------------------------------- embeddings and mappings


def mean_pool(h_tok, attention_mask):
    """Sentence embedding: the average of the last layer's token states over real tokens (the
    paper's pooling): (B, T, d), (B, T) -> (B, d). Padding positions do not count."""
    m = attention_mask.unsqueeze(-1).to(h_tok.dtype)
    return (h_tok * m).sum(1) / m.sum(1).clamp(min=1)


def normal_equation(S_A, S_B, ridge=0.0):
    """Least-squares map Phi with S_A Phi ~ S_B (section II.C, the normal equation):

        Phi* = (S_A^T S_A + lambda I)^-1 S_A^T S_B,      lambda = ridge (the paper: 0)

    S_A, S_B (n, d): row i of S_B translates row i of S_A. Returns Phi (d, d). Solved in float64
    with lstsq on the stacked system [S_A; sqrt(lambda) I] Phi = [S_B; 0], which is the same
    solution without forming (S_A^T S_A)^-1 (badly conditioned for sentence embeddings, which
    share a large common component)."""
    A, B = S_A.double(), S_B.double()
    if ridge > 0:
        d = A.shape[1]
        A = torch.cat([A, math.sqrt(ridge) * torch.eye(d, dtype=A.dtype, device=A.device)])
        B = torch.cat([B, torch.zeros(d, B.shape[1], dtype=B.dtype, device=B.device)])
    return torch.linalg.lstsq(A, B, driver="gelsd" if A.device.type == "cpu" else None).solution.to(S_A.dtype)


def procrustes(S_A, S_B):
    """Orthogonal map Psi minimising ||S_A Psi - S_B||_F subject to Psi^T Psi = I (Eq. 2):

        U Sigma V^T = SVD(S_A^T S_B),      Psi* = U V^T

    (the paper prints SVD(S_B S_A^T), an n x n matrix: the factors are in the wrong order).
    S_A, S_B (n, d). Returns Psi (d, d), orthogonal."""
    U, _, Vh = torch.linalg.svd(S_A.double().T @ S_B.double())
    return (U @ Vh).to(S_A.dtype)


def fit_linear(S_A, S_B, epochs=100, lr=0.5, batch_size=256, seed=0):
    """A single linear layer without bias or activation, S_A W ~ S_B, trained by SGD (momentum
    0.9) on the mean squared error of d linear regressors (Eq. 3):

        L(W) = 1/n sum_i ||s_B^(i) - s_A^(i) W||^2

    The step size is lr / mean ||s_A||^2, so one lr suits encoders whose embeddings differ in scale
    (the largest curvature of L is at most 2 mean ||s_A||^2). Returns W (d, d). With enough epochs
    it approaches normal_equation(S_A, S_B); directions in which the embeddings hardly vary are
    learnt slowly, as with any gradient descent on this problem."""
    g = torch.Generator().manual_seed(seed)
    lr = lr / S_A.pow(2).sum(1).mean().item()
    layer = nn.Linear(S_A.shape[1], S_B.shape[1], bias=False).to(S_A.device)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / math.sqrt(S_A.shape[1]))
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        for idx in torch.randperm(len(S_A), generator=g).split(batch_size):
            loss = ((layer(S_A[idx]) - S_B[idx]) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return layer.weight.detach().T.clone()


def alignment_quality(M, T):
    """Mapped source rows M (n, d) against their translations T (n, d): the mean cosine of the
    translated pairs (the paper's measure), and bitext retrieval accuracy in percent, each source
    picking its nearest target by cosine (src2tgt) and each target its nearest source (tgt2src)."""
    sim = F.normalize(M.float(), dim=-1) @ F.normalize(T.float(), dim=-1).T
    gold = torch.arange(len(M))
    return {"cosine": sim.diagonal().mean().item(),
            "retrieval_src2tgt": 100.0 * (sim.argmax(1) == gold).float().mean().item(),
            "retrieval_tgt2src": 100.0 * (sim.argmax(0) == gold).float().mean().item(), "n": len(M)}


@torch.no_grad()
def embed(encoder, tok, texts, max_len, device, autocast, batch_size=128):
    """Mean-pooled embeddings (n, d) in float32 on the CPU, batched by length, bf16 autocast on GPU."""
    was_training = encoder.training
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), encoder.config.hidden_size)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        b = tok([texts[i] for i in idx], truncation=True, max_length=max_len, padding=True, return_tensors="pt").to(device)
        with autocast:
            h = encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        out[idx] = mean_pool(h.float(), b["attention_mask"]).cpu()
    encoder.train(was_training)
    return out


# ---------------------------------------------------------------------------- STS models


class CrossEncoder(nn.Module):
    """`<s> A </s></s> B </s>` -> one score: RobertaClassificationHead with one output (dense, tanh,
    dropout, linear) on the <s> state, what the GLUE code fine-tunes for STS-B."""

    def __init__(self, encoder):
        super().__init__()
        h = encoder.config.hidden_size
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(h, h), nn.Tanh(), nn.Dropout(0.1), nn.Linear(h, 1))
        self.train()

    def forward(self, a, b):
        h = self.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        return self.head(h[:, 0]).squeeze(-1).float()


class BiEncoder(nn.Module):
    """Sentence-BERT: both sentences through the same encoder, mean pooling, cosine similarity."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.train()

    def forward(self, a, b):
        e = [mean_pool(self.encoder(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).last_hidden_state,
                       x["attention_mask"]) for x in (a, b)]
        return F.cosine_similarity(e[0].float(), e[1].float(), dim=-1)


def sts_loss(pred, score, arch):
    """MSE regression: the cross-encoder predicts the 0-5 score (GLUE STS-B); the bi-encoder's
    cosine is regressed onto score / 5 (Sentence-BERT's CosineSimilarityLoss)."""
    return F.mse_loss(pred, score if arch == "cross" else score / 5.0)


def batches(tok, pairs, arch, max_len, batch_size, shuffle=False, seed=0):
    """(indices, a, b, score) batches, shuffled or (for evaluation) by length; for the
    cross-encoder `a` holds the joint `A </s></s> B` input."""
    order = np.random.default_rng(seed).permutation(len(pairs)) if shuffle else \
        np.argsort([len(p.a) + len(p.b) for p in pairs], kind="stable")
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        A, B = [pairs[i].a for i in idx], [pairs[i].b for i in idx]
        score = torch.tensor([pairs[i].score for i in idx])
        if arch == "cross":
            joint = tok(A, B, truncation="longest_first", max_length=max_len, padding=True, return_tensors="pt")
            yield idx, joint, joint, score
        else:
            yield (idx, tok(A, truncation=True, max_length=max_len, padding=True, return_tensors="pt"),
                   tok(B, truncation=True, max_length=max_len, padding=True, return_tensors="pt"), score)


@torch.no_grad()
def sts_eval(model, tok, pairs, arch, args, device, autocast, emb=None):
    """Spearman and Pearson (percent) of the model's scores against the gold scores. `emb` (texts ->
    embeddings), for a bi-encoder after training, gives the same cosines from cached embeddings."""
    gold = [p.score for p in pairs]
    if emb is not None:
        pred = F.cosine_similarity(emb([p.a for p in pairs]), emb([p.b for p in pairs]), dim=-1).numpy()
    else:
        was_training = model.training
        model.eval()
        pred = np.empty(len(pairs))
        for idx, a, b, _ in batches(tok, pairs, arch, args.max_len, 64):
            with autocast:
                pred[idx] = model(a.to(device), b.to(device)).float().cpu().numpy()
        model.train(was_training)
    return {"spearman": common.spearman(pred, gold), "pearson": common.pearson(pred, gold), "n": len(pairs)}


# ---------------------------------------------------------------------------- main


def load(args, langs):
    """Train/dev/test STS sets, and for every target language the row-parallel English-target
    pairs of the train and test splits (checked row by row)."""
    common.DATA_NOTES.clear()  # notes belong to one run
    try:
        train = common.load_sts(args.data_dir, args.train_lang, "train", args.data)
        if args.limit_train and args.limit_train < len(train):
            keep = sorted(np.random.default_rng(0).permutation(len(train))[:args.limit_train])
            train = [train[i] for i in keep]
        evals = {x: {s: common.load_sts(args.data_dir, x, s, args.data) for s in (("test",) if x.startswith("sem17-") else ("dev", "test"))}
                 for x in ["en", *langs]}
        parallel = {}
        for x in langs:
            if x.startswith("sem17-"):
                continue
            split = {}
            for s in ("train", "test"):
                en, tgt = common.load_sts(args.data_dir, "en", s, args.data), common.load_sts(args.data_dir, x, s, args.data)
                common.check_parallel(en, tgt)
                split[s] = (en, tgt)
            if args.pairs:
                split["fit"] = common.read_parallel(args.pairs)
            parallel[x] = split
    except common.DataError as e:
        raise SystemExit(f"error: {e}") from None
    return train, evals, parallel


def sentence_pairs(en, tgt):
    """Unique (English, target) sentences of two row-parallel STS sets: both columns, duplicates
    dropped (a repeated sentence would make retrieval ambiguous)."""
    seen, out = set(), []
    for e, t in zip(en, tgt):
        for pair in ((e.a, t.a), (e.b, t.b)):
            if pair[0] not in seen and pair[1] not in seen:
                seen.update(pair)
                out.append(pair)
    return out


def main(argv=None):
    args = parse_args(argv)
    device, autocast, world = common.setup(args)
    if world > 1:
        raise SystemExit("error: sentence_mapping.py runs on one process (STS-B is 5,749 pairs); drop torchrun")
    common.log(f"sentence_mapping | arch {args.arch} | device {device} | bf16 autocast "
               f"{isinstance(autocast, torch.autocast)}\nargs {vars(args)}")
    t_start = time.time()
    langs = [x.strip() for x in args.lang.split(",") if x.strip() and x.strip() != "en"]
    train, evals, parallel = load(args, langs)
    texts = [s for p in train for s in (p.a, p.b)] + [s for d in evals.values() for ps in d.values() for p in ps for s in (p.a, p.b)]
    enc, tok = common.load_encoder(args.model, texts, args.out_dir, args.max_len)
    for note in common.notes():
        common.log(f"data note: {note}")
    common.log(f"train {len(train)} {args.train_lang} STS pairs | eval " +
               ", ".join(f"{x} {'/'.join(str(len(v)) for v in d.values())}" for x, d in evals.items()))

    # 1. STS fine-tuning: RAdam, 10% linear warm-up then linear decay (the GLUE script's schedule)
    arch = "bi" if args.arch == "none" else args.arch
    model = (CrossEncoder(enc) if arch == "cross" else BiEncoder(enc)).to(device)
    history, best, step, t_train = [], None, 0, 0.0
    if args.arch != "none":
        opt = torch.optim.RAdam(model.parameters(), lr=args.lr, weight_decay=0.0)
        total = args.epochs * math.ceil(len(train) / args.batch_size)
        total = min(total, args.max_steps) if args.max_steps else total
        warm = max(1, int(args.warmup * total))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
        watch = [args.train_lang] if args.select_on == "en" else [x for x in langs if x in evals and "dev" in evals[x]] or ["en"]
        for epoch in range(1, args.epochs + 1):
            t0, losses = time.time(), []
            for _, a, b, score in batches(tok, train, arch, args.max_len, args.batch_size, True, args.seed + epoch):
                with autocast:
                    pred = model(a.to(device), b.to(device))
                loss = sts_loss(pred, score.to(device), arch)
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
                    el = t_train + time.time() - t0
                    common.log(f"step {step}/{total} epoch {epoch} | loss {loss.item():.4f} | lr {sched.get_last_lr()[0]:.2e} "
                               f"| {step * args.batch_size / el:.1f} pairs/s | eta {el / step * (total - step) / 60:.1f} min")
                if step >= total:
                    break
            t_train += time.time() - t0
            # per epoch: dev of the training language, and of the languages --select_on watches (all at the end)
            dev = {x: sts_eval(model, tok, evals[x]["dev"], arch, args, device, autocast)
                   for x in dict.fromkeys([args.train_lang, *(watch if args.select_on != "last" else [])])}
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "dev": dev})
            common.log(f"epoch {epoch} dev | " + " | ".join(f"{x} spearman {m['spearman']:.2f}" for x, m in dev.items()))
            if args.select_on != "last":
                score = np.mean([dev[x]["spearman"] for x in watch])
                if best is None or score > best[1]:
                    best = (epoch, score, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            if step >= total:
                break
        if best is not None:
            common.log(f"restoring epoch {best[0]} (best {args.select_on} dev spearman {best[1]:.2f})")
            model.load_state_dict(best[2])

    # the encoder is fixed from here on: embed every distinct sentence once
    cache = {}

    def emb(texts):
        new = list(dict.fromkeys(t for t in texts if t not in cache))
        if new:
            cache.update(zip(new, embed(enc, tok, new, args.max_len, device, autocast)))
        return torch.stack([cache[t] for t in texts])

    # 2. monolingual zero-shot STS on every language's dev and test sets
    metrics = {}
    for x, d in evals.items():
        metrics[x] = {s: sts_eval(model, tok, ps, arch, args, device, autocast, None if arch == "cross" else emb)
                      for s, ps in d.items()}
        common.log(f"sts {x:>12} | " + " | ".join(f"{s} spearman {r['spearman']:.2f} pearson {r['pearson']:.2f}"
                                                for s, r in metrics[x].items()))

    # 3-4. mappings fitted on parallel train sentences, evaluated on the parallel test split; cross-lingual STS
    mapping, cross_lingual = {}, {}
    for x, split in parallel.items():
        en_test, tgt_test = split["test"]
        xl_pairs = [common.StsPair(e.a, t.b, e.score, (), e.where) for e, t in zip(en_test, tgt_test)]
        if arch == "cross":  # the cross-encoder scores mixed-language pairs directly; nothing to map
            cross_lingual[x] = {"cross_encoder": sts_eval(model, tok, xl_pairs, arch, args, device, autocast)}
            common.log(f"cross-lingual STS en-{x} (sentence1 en, sentence2 {x}) | spearman {cross_lingual[x]['cross_encoder']['spearman']:.2f}")
            continue
        fit = split.get("fit") or sentence_pairs(*split["train"])
        held = sentence_pairs(en_test, tgt_test)
        s, t = (0, 1) if args.direction == "en2x" else (1, 0)  # mapped side (0 English, 1 target), other side
        fit_s, fit_t = emb([p[s] for p in fit]), emb([p[t] for p in fit])
        held_s, held_t = emb([p[s] for p in held]), emb([p[t] for p in held])
        W = {"normal_equation": normal_equation(fit_s, fit_t, args.ridge), "procrustes": procrustes(fit_s, fit_t),
             "fit_linear": fit_linear(fit_s, fit_t, args.map_epochs, args.map_lr, seed=args.seed)}
        mapping[x] = {"unmapped": alignment_quality(held_s, held_t), "fit_pairs": len(fit)}
        mapping[x].update({k: alignment_quality(held_s @ w, held_t) for k, w in W.items()})
        common.log(f"mapping {args.direction} {x} | fitted on {len(fit)} pairs, evaluated on {len(held)} held-out | " + " | ".join(
            f"{k} cos {m['cosine']:.4f} R@1 {m['retrieval_src2tgt']:.1f}/{m['retrieval_tgt2src']:.1f}"
            for k, m in mapping[x].items() if k != "fit_pairs"))
        # Table IV: cos(sentence1 in English, sentence2 in the target language), mapped side per --direction
        ea, eb = emb([p.a for p in xl_pairs]), emb([p.b for p in xl_pairs])
        gold = [p.score for p in xl_pairs]
        cross_lingual[x] = {}
        for k, w in [("unmapped", None), *W.items()]:
            a, b = (ea, eb) if w is None else (ea @ w, eb) if args.direction == "en2x" else (ea, eb @ w)
            pred = F.cosine_similarity(a, b, dim=-1).numpy()
            cross_lingual[x][k] = {"spearman": common.spearman(pred, gold), "pearson": common.pearson(pred, gold), "n": len(gold)}
        common.log(f"cross-lingual STS en-{x} | " + " | ".join(f"{k} spearman {m['spearman']:.2f}" for k, m in cross_lingual[x].items()))

    path = common.save_results(args.out_dir, f"sentence_mapping-{args.arch}", args, metrics, mapping=mapping,
                               cross_lingual=cross_lingual, history=history, selected_epoch=best[0] if best else len(history),
                               steps=step, train_pairs_per_s=step * args.batch_size / max(t_train, 1e-9),
                               wall_s=time.time() - t_start, peak_memory_mb=common.peak_memory_mb(device), world_size=world)
    common.log(f"wrote {path}")
    return {"metrics": metrics, "mapping": mapping, "cross_lingual": cross_lingual, "history": history}


if __name__ == "__main__":
    main()
