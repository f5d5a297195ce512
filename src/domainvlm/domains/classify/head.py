"""Constrained answer over a taxonomy (``config.domainvlm.answer_head: classify``).

For a first question about one image the answer line is *chosen, not decoded*: every valid line of the
question's language (one per ``taxonomy.answer_sets()``, cut from the training answer so its tokens are the
ones the model learnt, ending with the newline or the end-of-turn token) is scored by the model's own token
log-probabilities after the prompt, and the most probable one wins - the exact argmax over the answer trie,
not a greedy walk down it. The class description is then appended as fixed text (instruct.answer). Every
other turn (follow-ups, no image or several) is decoded freely, as without a head, except a text-only
question that needs the image ("what class is this?"): it abstains with ``reason: no_image`` and says so.

Qwen2-VL-family models see each image once: its embeddings are computed once and shared by all candidate
rows (3-D rotary positions from models.qwen_fast). Other families repeat the image per candidate.
"""

from __future__ import annotations

import torch

from ...data.images import as_pil
from ...errors import UserError
from ...models.chat_format import collate, encode_prompt
from .instruct import answer, question_lang
from .model_dir import model_taxonomy

MAX_ROWS = 64  # candidate rows per forward
MAX_FREE_CLASSES = 12  # multi-label without listed combinations: every subset is an answer (2^n lines)


def _visual(model):
    inner = getattr(model, "model", None)
    return getattr(inner, "visual", None) or getattr(model, "visual", None)


class ClassifyHead:
    def __init__(self, model, processor):
        self.model, self.processor, self.tok = model, processor, processor.tokenizer
        self.tax = model_taxonomy(model)
        if self.tax.multi_label and self.tax.combinations is None and len(self.tax.names) > MAX_FREE_CLASSES:
            raise UserError(f"taxonomy {self.tax.name!r}: {len(self.tax.names)} multi-label classes without "
                            f"'combinations' would give 2^{len(self.tax.names)} answers; list the allowed combinations")
        self.sets = self.tax.answer_sets()
        eos = self.tok.eos_token_id
        self.cands = {}
        for lang in ("en", "zh"):
            rows = []
            for s in self.sets:
                ids = self.tok(answer(s, self.tax, lang, True), add_special_tokens=False)["input_ids"]
                end = next((j + 1 for j, t in enumerate(ids) if "\n" in self.tok.decode([t])), None)
                rows.append(ids[:end] if end else ids + [eos])
            self.cands[lang] = rows
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else eos
        self.qwen = _visual(model) is not None and hasattr(model.config, "image_token_id")
        from ...inference.confidence import Calibration, membership

        self.calibration = Calibration()  # the model folder's (domainvlm calibrate), set by the factory
        self.member = membership(self.sets, self.tax.names)
        self.annotators: list = []
        self.input_check = None  # the model folder's out-of-domain check (input_check.py), set by the factory

    # ------------------------------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def scores(self, convs: list[tuple[list[dict], list]], langs: list[str]) -> list[torch.Tensor]:
        """Log-probability of every candidate line per conversation (a tensor per conversation)."""
        encs = [encode_prompt(self.processor, m, ims) for m, ims in convs]
        feats = self._image_features(encs) if self.qwen else None
        if feats is not None and len(self.sets) <= MAX_ROWS:
            per = max(1, MAX_ROWS // len(self.sets))
            return [s for k in range(0, len(encs), per)
                    for s in self._cached_scores(encs[k:k + per], langs[k:k + per], feats[k:k + per])]
        rows = [(b, c) for b, lang in enumerate(langs) for c in range(len(self.cands[lang]))]
        out = [torch.empty(len(self.cands[lang])) for lang in langs]
        for s in range(0, len(rows), MAX_ROWS):
            part = rows[s:s + MAX_ROWS]
            cand = [self.cands[langs[b]][c] for b, c in part]
            lp = self._row_logprobs(encs, part, cand, feats)
            for (b, c), v in zip(part, lp.tolist()):
                out[b][c] = v
        return out

    def _image_features(self, encs) -> list[torch.Tensor]:
        dev, dtype = self.model.device, next(self.model.parameters()).dtype
        pv = torch.cat([e["pixel_values"] for e in encs]).to(dev, dtype)
        grid = torch.cat([e["image_grid_thw"] for e in encs]).to(dev)
        emb = _visual(self.model)(pv, grid_thw=grid)
        emb = getattr(emb, "pooler_output", emb)
        emb = torch.cat(list(emb)) if isinstance(emb, (list, tuple)) else emb
        merge = self.processor.image_processor.merge_size
        sizes = (grid.prod(-1) // (merge * merge)).tolist()
        return list(emb.split(sizes))

    def _cached_scores(self, encs, langs, feats) -> list[torch.Tensor]:
        """Qwen2-VL family: each prompt (with its image) is run once; its KV cache is repeated for the
        candidate lines, which are then scored in one forward."""
        from ...models.qwen_fast import embed_with_images, mrope_positions

        model, dev, n_c = self.model, self.model.device, len(self.sets)
        seqs = [e["input_ids"][0].tolist() for e in encs]
        n = max(map(len, seqs))
        ids = torch.tensor([[self.pad_id] * (n - len(q)) + q for q in seqs], device=dev)
        att = torch.tensor([[0] * (n - len(q)) + [1] * len(q) for q in seqs], device=dev)
        grid = torch.cat([e["image_grid_thw"] for e in encs]).to(dev)
        pos, _ = mrope_positions(ids, model.config.image_token_id, grid, self.processor.image_processor.merge_size, att)
        emb = embed_with_images(model, ids, torch.cat(feats))
        out = model(inputs_embeds=emb, attention_mask=att, position_ids=pos, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), -1)  # predicts every candidate's first token
        cache = out["cache"] if "cache" in getattr(out, "__dataclass_fields__", {}) else out.past_key_values
        cache.batch_repeat_interleave(n_c)
        cands = [c for lang in langs for c in self.cands[lang]]
        t = max(map(len, cands))
        step = torch.tensor([c + [self.pad_id] * (t - len(c)) for c in cands], device=dev)
        mask = torch.tensor([[1] * len(c) + [0] * (t - len(c)) for c in cands], device=dev)
        nxt = (pos.amax(dim=(0, 2)) + 1).repeat_interleave(n_c)
        p = (nxt[:, None] + torch.arange(t, device=dev)[None])[None].expand(3, -1, -1)
        att2 = torch.cat([att.repeat_interleave(n_c, 0), mask], 1)
        kw = {"cache" if "cache" in _forward_params(model) else "past_key_values": cache}
        lp = torch.log_softmax(model(input_ids=step, attention_mask=att2, position_ids=p, **kw).logits.float(), -1)
        total = []
        for r, c in enumerate(cands):  # token 0 from the prompt's last logits, token i from step position i-1
            v = first[r // n_c, c[0]]
            if len(c) > 1:
                v = v + lp[r, torch.arange(len(c) - 1, device=dev), torch.tensor(c[1:], device=dev)].sum()
            total.append(v)
        return list(torch.stack(total).cpu().view(len(encs), n_c))

    def _row_logprobs(self, encs, part, cand, feats) -> torch.Tensor:
        dev = self.model.device
        seqs = [encs[b]["input_ids"][0].tolist() + c for (b, _), c in zip(part, cand)]
        n, k = max(map(len, seqs)), max(map(len, cand)) + 1
        ids = torch.tensor([[self.pad_id] * (n - len(q)) + q for q in seqs], device=dev)
        att = torch.tensor([[0] * (n - len(q)) + [1] * len(q) for q in seqs], device=dev)
        if feats is not None:
            from ...models.qwen_fast import embed_with_images, mrope_positions

            grid = torch.cat([encs[b]["image_grid_thw"] for b, _ in part]).to(dev)
            merge = self.processor.image_processor.merge_size
            pos, _ = mrope_positions(ids, self.model.config.image_token_id, grid, merge, att)
            emb = embed_with_images(self.model, ids, torch.cat([feats[b] for b, _ in part]))
            logits = self.model(inputs_embeds=emb, attention_mask=att, position_ids=pos, logits_to_keep=k).logits
        else:  # any other family: the processor's inputs, the image repeated per candidate row
            rows = []
            for (b, _), c in zip(part, cand):
                e = dict(encs[b])
                e["input_ids"] = torch.cat([e["input_ids"], torch.tensor([c])], 1)
                e["attention_mask"] = torch.ones_like(e["input_ids"])
                for key in ("mm_token_type_ids", "token_type_ids"):  # text tokens: type 0
                    if key in e:
                        e[key] = torch.cat([e[key], torch.zeros(1, len(c), dtype=e[key].dtype)], 1)
                rows.append(e)
            batch = {key: v.to(dev) for key, v in collate(rows, self.pad_id).items()}
            logits = self.model(**batch, logits_to_keep=k).logits
        lp = torch.log_softmax(logits.float(), -1)
        total = torch.zeros(len(part), device=dev)
        for r, c in enumerate(cand):  # token i of a candidate of length T is predicted at kept index k-T-1+i
            t = len(c)
            idx = torch.arange(k - t - 1, k - 1, device=dev)
            total[r] = lp[r, idx, torch.tensor(c, device=dev)].sum()
        return total.cpu()

    # ------------------------------------------------------------------------------------------ answers
    def classify(self, convs, langs) -> list[tuple[str, ...]]:
        return [self.sets[int(s.argmax())] for s in self.scores(convs, langs)]

    def assess(self, convs, sampling=None, batch_size: int = 32) -> list:
        """Structured answers (inference/assessment.Assessment) for first questions about one image: the most
        probable line, its calibrated probability over all valid lines, per-class marginals and low-confidence
        abstention below the stored threshold; None for every other turn. Annotators (``self.annotators``)
        are called as ``fn(assessment, image, lang)``."""
        from ...inference import confidence as ic
        from ...inference.assessment import OUT_OF_DOMAIN, Assessment

        convs = [(m, [as_pil(i) for i in ims]) for m, ims in convs]
        out: list = [self._no_image(m, ims) for m, ims in convs]  # text-only class questions: abstain
        todo = [k for k, (m, ims) in enumerate(convs) if _first_turn_one_image(m, ims)]
        for s in range(0, len(todo), batch_size):
            chunk = todo[s:s + batch_size]
            langs = [question_lang(convs[k][0][-1]["content"]) for k in chunk]
            away = self.input_check.outside([convs[k][1][0] for k in chunk]) if self.input_check else []
            for j in (j for j, bad in enumerate(away) if bad):  # not of the model's kind: not scored
                out[chunk[j]] = Assessment(labels=(), confidence=None, abstain=True, reason=OUT_OF_DOMAIN,
                                           detail="input_statistics", lang=langs[j])
            keep = [j for j in range(len(chunk)) if not (away and away[j])]
            if not keep:
                continue
            lp = torch.stack(self.scores([convs[chunk[j]] for j in keep], [langs[j] for j in keep]))
            probs = ic.distribution(lp, self.calibration.temperature)
            chosen = lp.argmax(-1).tolist()  # the exact argmax, as without confidence
            for j, a in zip(keep, ic.assessments(probs, chosen, self.sets, self.tax.names, [langs[j] for j in keep],
                                                 self.calibration, self.member, lp)):
                for fn in self.annotators:
                    fn(a, convs[chunk[j]][1][0], a.lang)
                out[chunk[j]] = a
        return out

    def _no_image(self, messages, images):
        """The ``no_image`` abstention for a text-only question that needs the image ("what class is this?"),
        else None: a knowledge or off-topic question is still decoded freely, as before (inference/no_image.py;
        the model was trained on questions about one image only, so it would make a class up)."""
        from ...inference.assessment import NO_IMAGE, Assessment
        from ...inference.no_image import class_knowledge, image_question, needs_input, text_only

        if not text_only(messages, images):
            return None
        names = [n for c in self.tax.classes for n in (c.name, c.zh)]
        q = str(messages[-1].get("content") or "")
        if not needs_input(q, lambda s: image_question(s, names), lambda s: class_knowledge(s, names)):
            return None
        return Assessment(labels=(), confidence=None, abstain=True, reason=NO_IMAGE, lang=question_lang(q))

    def _follow_ups(self, convs, got, sampling, batch_size) -> dict:
        """Later turns about the conversation's image, to a model whose LM learnt only the class answer (it
        decoded them into word salad: "Scratches: scratches / ...scored into the in scratches Rolled划痕..."):
        the image's class again, in the new question's language, said to be all this model answers."""
        from ...data.record import IMAGE_TOKEN
        from ...inference.no_image import answers_only_lm

        todo = [k for k, ((m, ims), a) in enumerate(zip(convs, got))
                if a is None and ims and m and m[-1]["role"] == "user" and not _first_turn_one_image(m, ims)]
        if not todo or not answers_only_lm(self.model):
            return {}
        firsts = [([{"role": "user", "content": f"{IMAGE_TOKEN}\n{convs[k][0][-1]['content']}"}], convs[k][1][-1:])
                  for k in todo]
        from .input_check import follow_up_note

        return {k: _with_note(ans, follow_up_note(question_lang(firsts[j][0][0]["content"])))
                for j, (k, ans) in enumerate(zip(todo, self.answer(firsts, sampling, batch_size)))}

    def _text_only_answer(self, messages, images) -> str | None:
        """A text-only turn the head did not abstain on: a general question naming a class ("what is
        crazing?") gets the taxonomy's description of it; any other ("hello") to a model whose LM learnt only
        our answers gets what the expert answers; None (free decoding) otherwise, e.g. on a real base."""
        from ...inference.no_image import answers_only_lm, knowledge_question, names_class, text_only
        from . import input_check

        if not text_only(messages, images):
            return None
        q = str(messages[-1].get("content") or "")
        lang = question_lang(q)
        named = [c for c in self.tax.classes if names_class(q, (c.name, c.zh))]
        if named and knowledge_question(q):
            c = max(named, key=lambda c: len(c.name))  # "edge crack" rather than "crack"
            if text := c.describe(lang):  # named once: NEU's descriptions start with it ("Crazing: a network ...")
                if any(text.lower().startswith(n.lower()) for n in (c.name, c.zh, c.display(lang)) if n):
                    return text
                return f"{c.display(lang)}{'：' if lang == 'zh' else ': '}{text}"
        return input_check.help_message(self.tax, lang) if answers_only_lm(self.model) else None

    def fit_input_check(self, train_records, val_records, folder, max_reject: float, base=None, val_base=None,
                        info: dict | None = None) -> dict:
        """Fit the out-of-domain check (input_check.py) on labelled records, store it in ``folder`` and use it."""
        from .input_check import fit_records, save

        dv = getattr(self.model.config, "domainvlm", None) or {}
        size = int(dv.get("image_size") or 224) if isinstance(dv, dict) else 224
        chk = fit_records(train_records, val_records, size, max_reject, base, val_base, info)
        self.input_check = chk
        return {**chk.info, "threshold": chk.threshold, "file": str(save(folder, chk))}

    def answer(self, convs, sampling=None, batch_size: int = 32) -> list[str | None]:
        """The head hook (inference/answer_heads.AnswerHead): a class line plus its description for a first
        question about one image (with the confidence when the model is calibrated, and the low-confidence
        note when it abstains); None (the engine decodes freely) for every other turn."""
        from ...inference import confidence as ic
        from ...inference.assessment import NO_IMAGE, OUT_OF_DOMAIN
        from ...inference.generation import Answer
        from . import input_check

        out: list[str | None] = []
        got = self.assess(convs, sampling, batch_size)
        again = self._follow_ups(convs, got, sampling, batch_size)
        for k, ((m, ims), a) in enumerate(zip(convs, got)):
            if k in again:
                out.append(again[k])
                continue
            if a is None:
                out.append(self._text_only_answer(m, ims))
                continue
            if a.reason in (OUT_OF_DOMAIN, NO_IMAGE):
                say = input_check.message if a.reason == OUT_OF_DOMAIN else input_check.no_image_message
                out.append(Answer.make(say(self.tax, a.lang), assessment=a, completion_tokens=None))
                continue
            text = answer(a.labels, self.tax, a.lang, True)
            if self.calibration.fitted or a.notes or a.abstain:  # uncalibrated: the trained text, as before
                text = ic.with_confidence(text, a, self.calibration)
            out.append(Answer.make(text, assessment=a, completion_tokens=None))
        return out


def _with_note(ans, note: str):
    from ...inference.generation import Answer

    return Answer.make(f"{note}\n{ans}", assessment=getattr(ans, "assessment", None), completion_tokens=None)


def _forward_params(model) -> set:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def _first_turn_one_image(messages, images) -> bool:
    users = [m for m in messages if m["role"] == "user"]
    return len(users) == 1 and messages[-1]["role"] == "user" and len(images) == 1
