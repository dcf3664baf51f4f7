"""Trim a SentencePiece-Unigram encoder's vocabulary to the pieces that occur in the data at hand.

On a small CPU most of an optimizer step is Adam over the word-embedding matrix (96M of the 118M
parameters of multilingual-e5-small). Keeping only the rows the runs can ever look up leaves every
tokenization and every encoder output on that data unchanged, and makes CPU runs several times
faster. This is a benchmark/reproduction helper; the method files are untouched.

    python tools/trim_vocab.py --model ~/.cache/xalign/multilingual-e5-small \
        --out ~/.cache/xalign/e5-small-trim-massive-matis \
        --data massive:data/massive:en,th,hi --data matis:data/multiatis:en,hi,tr
        # plain-text corpora (e.g. the sides of a line-aligned parallel corpus): --data text:a.en,a.de

What it does:
  1. Collects every text the runs tokenize, with the repo's own loaders (common.load_split for
     train/dev/test of each listed language, common.load_translations for the English train set's
     translations into each non-English one): intent/slot examples as pre-split words, exactly as
     common.encode does, and translations as whole sentences, as common.encode_text does.
  2. Keeps the special tokens, every piece id that occurs, and the lowest-scored piece (the Unigram
     model derives its <unk> score from the minimum score of its vocabulary, so keeping it keeps
     the unknown-character penalty, and hence the segmentation, exactly as before). Kept ids keep
     their original order, so <s> <pad> </s> <unk> stay 0..3.
  3. Writes tokenizer.json (Unigram vocab, unk_id, added_tokens, post-processor special ids),
     tokenizer_config.json (added_tokens_decoder), model.safetensors (the word-embedding rows
     sliced; every other tensor unchanged), config.json (vocab_size), and copies the other files
     (except sentencepiece.bpe.model, whose ids would no longer match).
  4. Verifies: trimmed tokenizer ids == original ids mapped old->new on every collected text (and
     the same word ids for pre-split inputs), and the trimmed model's last_hidden_state equals the
     original's on 16 real sentences (max abs diff < 1e-5). Exits non-zero if anything differs.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent  # the repo root, for common.py
sys.path.insert(0, str(ROOT))
import common  # noqa: E402

SKIP_FILES = {"sentencepiece.bpe.model", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "config.json"}


def fail(msg):
    raise SystemExit(f"trim_vocab: FAILED: {msg}")


def collect(specs):
    """(pre-split word lists, whole-sentence texts) of every --data spec `name:dir:lang,lang`. Pair
    datasets (PAWS-X, XNLI) contribute both sentences of each pair (a pair is tokenized segment by
    segment); splits a folder does not have (XTREME's PAWS-X/XNLI: dev only) are skipped."""
    words, sentences = [], []
    for spec in specs:
        if spec.startswith("text:"):  # plain text, one sentence per line (parallel corpora for ppa_moco_tlm.py)
            for path in spec[5:].split(","):
                lines = [x.rstrip("\n") for x in open(path, encoding="utf-8")]
                sentences += [x for x in lines if x.strip()]
                print(f"  text {path}: {len(lines)} lines")
            continue
        name, data_dir, langs = spec.split(":")
        langs = langs.split(",")
        if name == "sts":  # sentence_mapping.py: STS-B (en), KorSTS (ko), stsb-multi-mt (others)
            for lang in langs:
                for split in ("train", "dev", "test"):
                    xs = common.load_sts(data_dir, lang, split)
                    sentences += [s for p in xs for s in (p.a, p.b)]
                    print(f"  sts {lang} {split}: {len(xs)} pairs")
            continue
        for lang in langs:
            for split in ("train", "dev", "test"):
                try:
                    xs = common.load_split(name, data_dir, lang, split)
                except common.DataError:
                    print(f"  {name} {lang} {split}: not in {data_dir}, skipped")
                    continue
                for e in xs:
                    if isinstance(e, common.Pair):
                        sentences += [e.a, e.b]
                    else:
                        words.append(e.words)
                print(f"  {name} {lang} {split}: {len(xs)} examples")
        try:
            english = common.load_split(name, data_dir, "en", "train")
        except common.DataError:
            continue
        for lang in langs:
            if lang != "en":
                ts = [t for t in common.load_translations(name, data_dir, lang, english) if t]
                sentences += [s for t in ts for s in (t if isinstance(t, tuple) else (t,))]
                print(f"  {name} {lang} translations: {len(ts)}")
    return words, sentences


def encode_all(tok, words, sentences):
    """Ids (and word ids) of every text, tokenized as the runs do."""
    w = tok(words, is_split_into_words=True) if words else {"input_ids": []}
    s = tok(sentences) if sentences else {"input_ids": []}
    word_ids = [w.word_ids(i) for i in range(len(words))]
    return w["input_ids"], word_ids, s["input_ids"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="folder of the original encoder (HF layout)")
    p.add_argument("--out", required=True, help="folder for the trimmed encoder")
    p.add_argument("--data", action="append", required=True, help="name:data_dir:lang,lang,... or text:FILE[,FILE...] "
                   "(one sentence per line, e.g. both sides of a line-aligned corpus); repeatable")
    a = p.parse_args(argv)
    from transformers import AutoModel, AutoTokenizer
    src, out = Path(a.model).expanduser(), Path(a.out).expanduser()

    print("collecting texts")
    words, sentences = collect(a.data)
    tok = AutoTokenizer.from_pretrained(src)
    w_ids, w_wids, s_ids = encode_all(tok, words, sentences)
    print(f"  {len(words)} pre-split examples, {len(sentences)} translations")

    # ---- what to keep: specials + every occurring id + the min-score piece (fixes the unk score)
    tj = json.loads((src / "tokenizer.json").read_text("utf-8"))
    model = tj["model"]
    if model["type"] != "Unigram":
        fail(f"tokenizer model is {model['type']}, only Unigram is supported")
    vocab = model["vocab"]  # [[piece, score], ...], index = id
    used = {i for seq in w_ids + s_ids for i in seq}
    specials = {t["id"] for t in tj["added_tokens"]} | {model["unk_id"]}
    min_piece = min(range(len(vocab)), key=lambda i: vocab[i][1])
    keep = sorted(used | specials | {min_piece})
    old2new = {o: n for n, o in enumerate(keep)}
    print(f"kept vocabulary: {len(keep)} of {len(vocab)} tokenizer ids "
          f"({len(used)} occurring, {len(specials)} special, min-score piece {vocab[min_piece][0]!r})")

    # ---- tokenizer.json
    out.mkdir(parents=True, exist_ok=True)
    model["vocab"] = [vocab[o] for o in keep]
    model["unk_id"] = old2new[model["unk_id"]]
    for t in tj["added_tokens"]:
        t["id"] = old2new[t["id"]]
    pp = tj.get("post_processor") or {}
    for proc in pp.get("processors", [pp]):  # TemplateProcessing, possibly inside a Sequence
        for st in (proc.get("special_tokens") or {}).values():
            st["ids"] = [old2new[i] for i in st["ids"]]
        for key in ("sep", "cls"):  # RobertaProcessing / BertProcessing: [token, id]
            if key in proc:
                proc[key] = [proc[key][0], old2new[proc[key][1]]]
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2), "utf-8")

    # ---- tokenizer_config.json
    tc = json.loads((src / "tokenizer_config.json").read_text("utf-8"))
    if "added_tokens_decoder" in tc:
        tc["added_tokens_decoder"] = {str(old2new[int(k)]): v for k, v in tc["added_tokens_decoder"].items()}
    (out / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), "utf-8")

    # ---- weights: slice the word embeddings, keep everything else
    tensors, emb_key = {}, None
    with safe_open(src / "model.safetensors", "pt") as f:
        meta = f.metadata() or {"format": "pt"}
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
            if k.endswith("word_embeddings.weight"):
                emb_key = k
    if emb_key is None:
        fail("no *word_embeddings.weight tensor in model.safetensors")
    old_rows = tensors[emb_key].shape[0]
    tensors[emb_key] = tensors[emb_key][torch.tensor(keep)].contiguous()
    save_file(tensors, out / "model.safetensors", metadata=meta)
    print(f"{emb_key}: {old_rows} -> {len(keep)} rows")

    cfg = json.loads((src / "config.json").read_text("utf-8"))
    cfg["vocab_size"] = len(keep)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):  # ids in the config move too
        if cfg.get(key) is not None:
            cfg[key] = old2new[cfg[key]]
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    for item in src.iterdir():
        if item.name in SKIP_FILES:
            continue
        if item.is_dir():
            shutil.copytree(item, out / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, out / item.name)
    (out / "TRIMMED.json").write_text(json.dumps({"from": str(src), "data": a.data, "kept": len(keep),
                                                  "old2new_ids": keep}) + "\n")

    # ---- verify the tokenizer
    print("verifying the tokenizer on every collected text")
    tok2 = AutoTokenizer.from_pretrained(out)
    w2, w2_wids, s2 = encode_all(tok2, words, sentences)
    bad = [i for i, (x, y) in enumerate(zip(w_ids, w2)) if [old2new[t] for t in x] != y]
    bad_w = [i for i, (x, y) in enumerate(zip(w_wids, w2_wids)) if x != y]
    bad_s = [i for i, (x, y) in enumerate(zip(s_ids, s2)) if [old2new[t] for t in x] != y]
    if bad or bad_w or bad_s:
        i = (bad or bad_w or [None])[0]
        fail(f"{len(bad)} pre-split texts with different ids, {len(bad_w)} with different word ids, "
             f"{len(bad_s)} sentences with different ids; first: "
             f"{words[i] if i is not None else sentences[bad_s[0]]}")
    if tok2.pad_token_id != old2new[tok.pad_token_id] or len(tok2) != len(keep):
        fail(f"pad id {tok2.pad_token_id} / len {len(tok2)} (expected {old2new[tok.pad_token_id]} / {len(keep)})")
    print(f"  tokenizer OK: {len(words)} pre-split examples (ids and word ids) and {len(sentences)} "
          f"sentences identical after the id map")

    # ---- verify the model on 16 real sentences
    enc1, enc2 = AutoModel.from_pretrained(src).eval(), AutoModel.from_pretrained(out).eval()
    step = max(1, len(sentences) // 16) if len(sentences) >= 16 else 1
    batch = (sentences[::step] + [" ".join(w) for w in words[::max(1, len(words) // 16)]])[:16]
    with torch.no_grad():
        b1, b2 = tok(batch, padding=True, return_tensors="pt"), tok2(batch, padding=True, return_tensors="pt")
        mapped = torch.tensor([[old2new[t] for t in row] for row in b1["input_ids"].tolist()])
        if not torch.equal(mapped, b2["input_ids"]):
            fail("batch ids differ after the id map")
        h1 = enc1(**b1).last_hidden_state
        h2 = enc2(**b2).last_hidden_state
    diff = (h1 - h2).abs().max().item()
    print(f"  model: last_hidden_state on {len(batch)} real sentences {tuple(h1.shape)}, max abs diff {diff:.3g}")
    if not diff < 1e-5:
        fail(f"trimmed model output differs (max abs diff {diff})")
    print(f"OK: wrote {out} (vocab_size {len(keep)})")


if __name__ == "__main__":
    main()
