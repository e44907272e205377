"""Text → token rows for the prior's encoder: open_clip's BPE for vqclip's priors, BART's for min-dalle's.

Every tokenizer writes rows of `length` tokens: begin, the caption's tokens, end, then padding;
a longer caption is cut (its end token kept). The empty caption gives [begin, end, pad, ...]:
the unconditional row that superconditioning compares against.

vqclip's own priors read open_clip's BPE ids. A small prior may keep only the ids its training
captions use (`ClipBpeTokenizer(kept_ids=...)`): a 49408-row text embedding would outweigh the
whole model. Its own ids are then 0 begin, 1 pad, 2 end, 3 unknown, 4... the kept BPE ids in
order; a word outside the kept set becomes the unknown token (the prior then ignores it, as it
ignores any word it never saw in training) and `unknown_words` names such words for a warning.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import UserError

BEGIN, PAD, END, UNKNOWN = 0, 1, 2, 3
PRUNED_SPECIALS = 4


def pad_rows(rows: list[list[int]], length: int, pad: int) -> torch.Tensor:
    """Token lists (each begin … end) → B × length, cut to length (keeping the end token), padded."""
    out = torch.full((len(rows), length), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row) > length:
            row = row[:length - 1] + row[-1:]
        out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def _clip_bpe():
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH

    from ..models.clip import shared_bpe

    return shared_bpe(DEFAULT_CONTEXT_LENGTH)


def clip_bpe_ids(text: str) -> list[int]:
    """open_clip's BPE ids for a text (lower-cased and cleaned as open_clip does), without begin/end."""
    return _clip_bpe().encode(text)


class ClipBpeTokenizer:
    """open_clip's BPE; with `kept_ids`, a pruned vocabulary (see the module notes)."""

    kind = "open_clip"

    def __init__(self, kept_ids: list[int] | None = None):
        self.kept_ids = sorted(set(kept_ids)) if kept_ids is not None else None
        if self.kept_ids is None:  # the full vocabulary: open_clip's own specials, padding 0
            bpe = _clip_bpe()
            self.begin, self.end, self.pad, self.vocab_size = (
                bpe.encoder["<start_of_text>"], bpe.encoder["<end_of_text>"], 0, len(bpe.encoder))
            self._map = None
        else:
            self.begin, self.end, self.pad = BEGIN, END, PAD
            self._map = {bpe_id: PRUNED_SPECIALS + i for i, bpe_id in enumerate(self.kept_ids)}
            self.vocab_size = PRUNED_SPECIALS + len(self.kept_ids)

    def ids(self, bpe_ids: list[int]) -> list[int]:
        """BPE ids → this tokenizer's row (begin … end)."""
        if self._map is not None:
            bpe_ids = [self._map.get(i, UNKNOWN) for i in bpe_ids]
        return [self.begin, *bpe_ids, self.end]

    def encode(self, texts: list[str], length: int) -> torch.Tensor:
        return pad_rows([self.ids(clip_bpe_ids(text)) for text in texts], length, self.pad)

    def unknown_words(self, text: str) -> list[str]:
        if self._map is None:
            return []
        return [word for word in re.findall(r"[\w']+", text.lower())
                if any(i not in self._map for i in clip_bpe_ids(word))]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "kept_ids": self.kept_ids}


class BartBpeTokenizer:
    """min-dalle's tokenizer: BART's byte-pair merges (`merges.txt`) and vocabulary (`vocab.json`)."""

    kind = "min-dalle"
    word_start = chr(ord(" ") + 256)  # "Ġ": BART marks the start of a word

    def __init__(self, vocab: dict[str, int], merges: list[str]):
        self.vocab = vocab
        pairs = [tuple(line.split()) for line in merges if line.strip() and not line.startswith("#")]
        self.rank = {pair: i for i, pair in enumerate(pairs)}
        try:
            self.begin, self.end, self.unknown, self.pad = (vocab[t] for t in ("<s>", "</s>", "<unk>", "<pad>"))
        except KeyError as exc:
            raise UserError(f"vocab.json lacks the special token {exc}: is it min-dalle's vocabulary?") from None
        self.vocab_size = len(vocab)

    @classmethod
    def from_files(cls, vocab_path: str | Path, merges_path: str | Path) -> BartBpeTokenizer:
        try:
            vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
            merges = Path(merges_path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read min-dalle's tokenizer files ({vocab_path}, {merges_path}): {exc}") from None
        return cls(vocab, merges)

    def subwords(self, word: str) -> list[str]:
        parts = [self.word_start, *word]
        while len(parts) > 1:
            pairs = list(zip(parts, parts[1:]))
            best = min(pairs, key=lambda pair: self.rank.get(pair, float("inf")))
            if best not in self.rank:
                break
            i = pairs.index(best)
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
        return parts

    def ids(self, text: str) -> list[int]:
        # min-dalle also turns emoji into words; here they are dropped with every non-ASCII character.
        text = text.lower().encode("ascii", errors="ignore").decode()
        tokens = [self.vocab.get(sub, self.unknown) for word in text.split(" ") if word
                  for sub in self.subwords(word)]
        return [self.begin, *tokens, self.end]

    def encode(self, texts: list[str], length: int) -> torch.Tensor:
        return pad_rows([self.ids(text) for text in texts], length, self.pad)

    def unknown_words(self, text: str) -> list[str]:
        return []
