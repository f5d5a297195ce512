"""Constrained wafer diagnosis: the answer head of the bundled wafer expert (``answer_head: wafer-diagnosis``).

For a first question about one wafer map that asks for a diagnosis, the model *decodes the diagnosis line
greedily over a token trie* of the valid lines in the question's language (the 38 MixedWM38 defect sets;
WM-811K's 9 types are among them), so every answer parses. Tokens with only one valid continuation are fed
without a decision, several at once. The explanation lines after it are then appended verbatim from
:func:`.knowledge.explain`: the same text the model was trained to produce after that
diagnosis line, added without decoding.

Which first questions get a diagnosis: those with a wafer/defect keyword (:func:`wants_diagnosis`), and those
without one for which the model itself would rather start ``Diagnosis:`` / ``诊断：`` than its trained
off-topic refusal (one extra prefill). Everything else (a follow-up turn, no image or several, an off-topic
question) is left to the engine (``None``), which decodes it freely, exactly as without a head; but a question
without an image that asks for a diagnosis (or a map fact) abstains with ``reason: no_image`` and says it needs
a wafer map (assess.no_image), and one that asks what a named pattern is gets the taxonomy's description and
causes of it (assess.knowledge_answer), since the model never saw a question without a map.

The valid lines are the answer sets of the model's taxonomy (``taxonomy.json`` in its folder; the wafer
default otherwise). The head implements the engine's hook (:class:`domainvlm.inference.answer_heads.AnswerHead`).

Language: Chinese when the question contains CJK characters, else English.

Structured answers (:meth:`WaferHead.assess`, assess.py): an input check first (not a wafer map, no dies, all
fail: abstain), then the walk; with confidence on (a stored calibration threshold, or asked) every valid line is
also scored from the walk's prefill (confidence.py) for the calibrated confidence and low-confidence abstention;
``head.annotators`` then add evidence / facts. :meth:`WaferHead.answer` words the assessments.

``diagnosis_more_bias`` (model config, ``domainvlm`` section; default 0): a logit bias on the " +" token at
each decision, i.e. a prior towards naming one more pattern: the decision threshold, to be chosen on val with
bench/wafer_bias.py and stored with the model. The model drops a faint pattern of a mixture far more often than
it adds one, yet on the shipped model every positive bias lost exact match on MixedWM38 val (model card), so it
ships with 0.
"""

from __future__ import annotations

import torch

from ...inference.confidence import Calibration, membership
from ...models.chat_format import encode_prompt
from ...models.qwen_fast import FastVision, embed_with_images, image_params, mrope_positions, patchify
from . import knowledge as wk
from .batch_load import MapCanvas, canvas_pixels, head_image
from .canvas import CANVAS
from .intent import question_lang, wants_diagnosis  # noqa: F401 - re-exported (the head's question tests)
from .knowledge import REFUSAL
from .taxonomy import for_model_dir
from .trie import branch_nodes, build_trie, forced, line_tokens, plus_token

NAME = "wafer-diagnosis"


def _cache_kw(model) -> str:
    """Name of the KV-cache argument: ``cache`` in newer transformers (the old name warns), else the old one."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _out_cache(out):
    return out["cache"] if "cache" in getattr(out, "__dataclass_fields__", {}) else out.past_key_values


class WaferHead:
    """``taxonomy``: the classes the model answers with (default: the wafer taxonomy)."""

    def __init__(self, model, processor, taxonomy=None):
        self.model, self.processor, self.tok = model, processor, processor.tokenizer
        self.tax = taxonomy or for_model_dir(None)
        self.cache_kw = _cache_kw(model)
        self.tries = {lang: build_trie(self.tok, lang, self.tax) for lang in ("en", "zh")}
        self.branch: list = []  # trie.Node where a decision is taken
        for root in self.tries.values():
            for node in branch_nodes(root):
                node.id = len(self.branch)
                self.branch.append(node)
        vocab = max(len(self.tok), model.get_output_embeddings().weight.shape[0])
        allowed = torch.zeros(len(self.branch), vocab, dtype=torch.bool)
        for node in self.branch:
            allowed[node.id, list(node.children)] = True
        self.allowed = allowed.to(model.device)
        self.vision = FastVision(model)
        first = lambda text: self.tok(text, add_special_tokens=False)["input_ids"][0]  # noqa: E731
        self.diag_first = sorted({first(wk.format_diagnosis((), lg, self.tax)) for lg in ("en", "zh")})
        self.refusal_first = sorted({first(REFUSAL[lg]) for lg in ("en", "zh")} - set(self.diag_first))
        self.ip = image_params(processor)
        # what pixel_values sends: single frames where the vision path folds the temporal kernel
        self.patch_ip = dict(self.ip, temporal=1) if self.vision._kernel() is not None else self.ip
        dv = getattr(model.config, "domainvlm", None) or {}  # domainvlm's own section of config.json
        self.size = int(dv.get("image_size") or CANVAS)
        self.image_token_id = model.config.image_token_id
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self._prompts: dict[str, list[int]] = {}
        self.grid = None
        self.n_patches = (self.size // self.ip["patch"]) ** 2
        self.more_bias = float(dv.get("diagnosis_more_bias") or 0.0)
        self.plus_ids = sorted({plus_token(self.tok, lang, self.tax) for lang in ("en", "zh")} - {None})
        # trust (assess.py): calibration from the model folder (make_head), confidence scoring (None: when the
        # model has a stored threshold), test-time augmentation, annotators fn(assessment, image, lang)
        self.calibration, self.confidence, self.tta = Calibration(), None, bool(dv.get("tta"))
        self.annotators: list = []
        self.stats = {"scored": 0, "argmax_differs": 0}
        self._lines = self._member = None
        self.kept = None  # kept_tokens.KeptTokens once evidence is in use (evidence.attributor)

    @property
    def lines(self):
        if self._lines is None:
            from .confidence import LineTable

            self._lines = LineTable(self)
        return self._lines

    def scores_confidence(self) -> bool:
        from .assess import wants_confidence

        return wants_confidence(self)

    @property
    def member(self):
        if self._member is None:
            self._member = membership(self.lines.sets, self.tax.names).to(self.model.device)
        return self._member

    # ---------------------------------------------------------------------------------------------- inputs
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        key = repr([(m["role"], m["content"]) for m in messages])
        if key not in self._prompts:
            from PIL import Image

            blank = Image.new("RGB", (self.size, self.size))
            enc = encode_prompt(self.processor, messages, [blank])
            self._prompts[key] = enc["input_ids"][0].tolist()
            self.grid = enc["image_grid_thw"][0].tolist()
            if len(self._prompts) > 4096:
                self._prompts.pop(next(iter(self._prompts)))
        return self._prompts[key]

    def rgb_array(self, images):
        """(B, size, size, 3) uint8 of the images as RGB (other sizes resized, nearest). Filled in place, 2-3x
        faster than np.stack: this is host time per map, which bounds the GPU's batched rate."""
        import numpy as np
        from PIL import Image

        s = self.size
        arr = np.empty((len(images), s, s, 3), np.uint8)
        for i, im in enumerate(images):
            im = im if im.mode == "RGB" else im.convert("RGB")
            arr[i] = np.asarray(im if im.size == (s, s) else im.resize((s, s), Image.Resampling.NEAREST))
        return arr

    def rgb_tensor(self, images) -> torch.Tensor | None:
        """The pictures of a batch as (B, size, size, 3) uint8 on the device; None for a batch of die grids
        only (drawn on the device by :meth:`pixel_values`)."""
        if images and all(isinstance(im, MapCanvas) for im in images):
            return None
        images = [im.to_pil() if isinstance(im, MapCanvas) else im for im in images]
        return torch.from_numpy(self.rgb_array(images)).to(self.model.device)

    def pixel_values(self, images, rgb=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches of the images without the HF processor: one frame per patch where the vision path folds
        the temporal kernel (FastVision.embed_patches). ``rgb``: :meth:`rgb_tensor` of the images, if made."""
        if images and all(isinstance(im, MapCanvas) for im in images):  # die grids (eval, predict): drawn there
            return canvas_pixels(self, [im.grid for im in images])
        s, dev = self.size, self.model.device
        pv = patchify(self.rgb_tensor(images) if rgb is None else rgb, **self.patch_ip)
        g = torch.tensor([[1, s // self.ip["patch"], s // self.ip["patch"]]] * len(images), device=dev)
        return pv, g

    # ---------------------------------------------------------------------------------------------- decode
    def _prefill(self, pixel_values, grid_thw, seqs: list[list[int]]):
        """One forward over left-padded prompts with their images: (output, attention mask, 3-D positions)."""
        model, dev = self.model, self.model.device
        n = max(map(len, seqs))
        ids = torch.tensor([[self.pad_id] * (n - len(q)) + q for q in seqs], device=dev)
        att = torch.tensor([[0] * (n - len(q)) + [1] * len(q) for q in seqs], device=dev)
        pos, _ = mrope_positions(ids, self.image_token_id, grid_thw, self.ip["merge"], att)
        dtype = next(model.parameters()).dtype
        vis = self.vision.tokens(pixel_values.to(dtype), tuple(grid_thw[0].tolist()))
        if self.kept is not None:  # evidence in use: its attribution starts from these tokens (kept_tokens.py)
            self.kept.put(pixel_values, vis, self.n_patches)
        emb = embed_with_images(model, ids, self.vision.visual.merger(vis))
        out = model(inputs_embeds=emb, attention_mask=att, position_ids=pos, use_cache=True, logits_to_keep=1)
        return out, att, pos

    @torch.inference_mode()
    def prefers_diagnosis(self, pixel_values, grid_thw, prompts: list[list[int]]) -> list[bool]:
        """Would the model itself start a diagnosis (rather than its off-topic refusal) for this question?"""
        if not self.refusal_first:
            return [True] * len(prompts)
        out, _, _ = self._prefill(pixel_values, grid_thw, prompts)
        lg = out.logits[:, -1].float()
        return (lg[:, self.diag_first].amax(-1) >= lg[:, self.refusal_first].amax(-1)).tolist()

    @torch.inference_mode()
    def diagnose(self, pixel_values, grid_thw, prompts: list[list[int]], langs: list[str],
                 state: dict | None = None) -> list[tuple]:
        """Defect set per row: greedy decoding restricted to the trie of valid diagnosis lines.

        ``pixel_values`` of images that share one grid (``grid_thw`` rows). Prompts are left-padded; after the
        prefill every row sits at a decision node; each step takes the best allowed token per row and feeds
        it together with the tokens forced after it (rows pad to the longest feed, masked out). ``state``, if
        given, receives the prefill (key/value tensors, last logits, mask, positions) for scoring every line.
        """
        model, dev = self.model, self.model.device
        nb = len(prompts)
        starts = [forced(self.tries[lang]) for lang in langs]
        seqs = [p + f for p, (f, _) in zip(prompts, starts)]
        nodes = [node for _, node in starts]
        out, att, pos = self._prefill(pixel_values, grid_thw, seqs)
        cache, logits = _out_cache(out), out.logits[:, -1]
        if state is not None:
            from .confidence import kv_refs

            state.update(kv=kv_refs(cache), logits=logits, att=att, pos=pos)
        next_pos = pos.amax(dim=(0, 2)) + 1
        result: list[tuple | None] = [None] * nb
        active = list(range(nb))
        while active:
            rows = torch.tensor(active, device=dev)
            ids_ = torch.tensor([nodes[b].id for b in active], device=dev)
            lg = logits[rows].float()
            if self.more_bias:
                lg[:, self.plus_ids] += self.more_bias
            pick = lg.masked_fill(~self.allowed[ids_], float("-inf")).argmax(-1).tolist()
            feed = {}
            for b, t in zip(active, pick):
                chain, node = nodes[b].next[t]
                nodes[b] = node
                if node.leaf is not None:
                    result[b] = node.leaf
                else:
                    feed[b] = [t] + chain
            active = list(feed)
            if not active:
                break
            T = max(map(len, feed.values()))
            lens = [len(feed.get(b, ())) for b in range(nb)]
            step = torch.tensor([feed.get(b, []) + [self.pad_id] * (T - lens[b]) for b in range(nb)], device=dev)
            m = torch.tensor([[1] * lens[b] + [0] * (T - lens[b]) for b in range(nb)], device=dev)
            lens_t = torch.tensor(lens, device=dev)
            p = (next_pos[:, None] + torch.arange(T, device=dev)[None])[None].expand(3, -1, -1)
            next_pos = next_pos + lens_t
            att = torch.cat([att, m], dim=1)
            out = model(input_ids=step, attention_mask=att, position_ids=p, use_cache=True, **{self.cache_kw: cache})
            cache = _out_cache(out)
            logits = out.logits[torch.arange(nb, device=dev), (lens_t - 1).clamp(min=0)]
        return result

    # ---------------------------------------------------------------------------------------------- answer
    def first_turn_with_map(self, messages: list[dict], images: list) -> bool:
        users = [m for m in messages if m["role"] == "user"]
        return len(users) == 1 and messages[-1]["role"] == "user" and len(images) == 1

    def evidence_for(self, messages: list[dict], image, answer: str | None = None) -> list[dict]:
        """Where each pattern of this map's diagnosis lies (evidence.py; ``bench --evidence``)."""
        from .evidence_head import evidence_for

        return evidence_for(self, messages, image, question_lang(messages[-1]["content"]), answer)

    def evidence_image(self, messages: list[dict], image, answer: str | None = None):
        """The evidence drawn over the map (PIL image; ``ask --evidence-png``)."""
        from .evidence_head import evidence_image

        return evidence_image(self, messages, image, question_lang(messages[-1]["content"]), answer)

    def evidence_overlay(self, assessment, image):
        """An annotated assessment's evidence drawn over its map (the API's ``evidence_png``; evidence_head.py)."""
        from .evidence_head import assessment_overlay

        return assessment_overlay(self, assessment, image)

    def answer(self, convs, sampling=None, batch_size: int = 1024) -> list[str | None]:
        """The engine's hook: the text of each assessment (an Answer carrying it as ``.assessment``), None
        where :meth:`assess` leaves the conversation to free decoding.
        Fact questions (yield, die counts, where a pattern lies) are answered from the map itself
        (questions.py; with the diagnosis's fields where a structured answer is asked for), a text-only question about what a named pattern is from the taxonomy's text
        (assess.knowledge_answer), the rest assessed."""
        from ...inference.generation import Answer
        from .assess import help_answer, knowledge_answer, no_image, text
        from .follow_up import later_turns
        from .questions import answer_facts

        later = later_turns(self, convs)  # later turns about the map, to a compact model (follow_up.py)
        convs = [(m, [head_image(i, self.size) for i in ims]) for m, ims in convs]
        todo = [k for k, (m, ims) in enumerate(convs) if self.first_turn_with_map(m, ims)]
        done = {**later, **(answer_facts(self, convs, todo, batch_size)[0] if todo else {})}
        for k, (m, ims) in enumerate(convs):  # text-only "what is an edge-ring pattern?": the taxonomy's text;
            if ims:                            # "hello" to a compact model: what it answers (not a made-up line)
                continue
            said = knowledge_answer(self, m, ims)
            if said is None:  # a diagnosis asked without a map: the no_image abstention, decided once here
                said = no_image(self, m, ims) or help_answer(self, m, ims)
            done[k] = said
        assessed = iter(self._assess([c for k, c in enumerate(convs) if k not in done], batch_size))
        out: list = []
        for k in range(len(convs)):
            a = done.get(k) if k in done else next(assessed)
            out.append(a if a is None or isinstance(a, str)
                       else Answer.make(text(self, a), assessment=a, completion_tokens=None))
        return out

    def enable_annotations(self) -> None:
        """Fill every assessment's evidence and map facts (evidence.py, facts.py; evidence costs a backward
        pass per map, so only where a structured answer is asked for)."""
        from . import evidence, facts

        if not self.annotators:
            self.annotators = [evidence.annotator(self), facts.annotate]  # facts read the evidence

    def assess(self, convs, sampling=None, batch_size: int = 1024) -> list:
        """Structured answers (assess.py). First questions about one map: diagnosis if the question asks for
        one (keywords) or, failing that, if the model itself would start a diagnosis rather than its refusal;
        a text-only diagnosis request: the ``no_image`` abstention; all else: None (the engine decodes it freely). ``sampling`` is not used: the diagnosis is greedy by
        design."""
        return self._assess([(m, [head_image(i, self.size) for i in ims]) for m, ims in convs], batch_size)

    def _assess(self, convs, batch_size: int) -> list:
        """:meth:`assess` of conversations whose images are already the head's (``head_image``)."""
        from . import input_check
        from .assess import assess_rows, no_image, select

        out: list = [no_image(self, m, ims) for m, ims in convs]  # text-only diagnosis requests: abstain
        todo = [k for k, (m, ims) in enumerate(convs) if self.first_turn_with_map(m, ims)]
        for s in range(0, len(todo), batch_size):
            chunk = todo[s:s + batch_size]
            qs = [convs[k][0][-1]["content"].replace("<image>", "") for k in chunk]
            prompts = [self.prompt_ids(convs[k][0]) for k in chunk]
            images = [convs[k][1][0] for k in chunk]
            rgb = self.rgb_tensor(images)
            pv, g = self.pixel_values(images, rgb)
            bad = input_check.check_batch(images, rgb, self.tax.all_fail is not None)
            keep = [wants_diagnosis(q) for q in qs]
            unsure = [j for j, ok in enumerate(keep) if not ok]
            if unsure:
                for j, ok in zip(unsure, self.prefers_diagnosis(*select(self, pv, g, unsure),
                                                                [prompts[j] for j in unsure])):
                    keep[j] = ok
            rows = [j for j, ok in enumerate(keep) if ok]
            if not rows:
                continue
            if len(rows) < len(chunk):
                pv, g = select(self, pv, g, rows)
            langs = [question_lang(qs[j]) for j in rows]
            found = assess_rows(self, pv, g, [images[j] for j in rows], [prompts[j] for j in rows], langs,
                                [bad[j] for j in rows])
            for j, a in zip(rows, found):
                out[chunk[j]] = a
        return out


def make_head(model, processor, model_dir=None) -> WaferHead:
    """The registry's factory for ``answer_head: wafer-diagnosis``: the taxonomy and the calibration come
    from the model folder."""
    from ...inference.confidence import load

    head = WaferHead(model, processor, for_model_dir(model_dir))
    head.calibration = load(model_dir)
    return head


def head_for(engine) -> WaferHead:
    """The head an engine uses (built on first use)."""
    return engine.answer_head
