"""Phrase and cue lists for the CheXpert-style labeler (:mod:`.chexpert_labeler`), English and Chinese.

Mention phrases follow the CheXpert labeler's mention lists in spirit (e.g. scarring counts as Lung Opacity,
calcified granulomas are not a Lung Lesion), extended with anatomy+attribute rules ("heart size is normal"
-> Cardiomegaly 0) and Chinese terms, including the non-standard renderings of GPT-translated reports that
a reader still recognises (固结 for consolidation, 空隙/气隙疾病 for airspace disease). docs/labeler.md lists them.

Mention kinds: an observation name; ``IGNORE`` (consumed so that e.g. "pericardial effusion" or "bony
opacity" is not a pleural effusion / lung opacity); ``ANAT:<observation>`` (anatomy whose polarity comes from
the nearest size attribute in the clause). Overlapping matches are resolved longest first.
Cue kinds: ``neg_pre``/``neg_post``/``neg_either`` (negation before/after/either side of the mention),
``unc_pre``/``unc_post``/``unc_either``,
``unc_strong`` (either side, beats negation: "cannot be excluded"), ``unc_two`` (between two alternatives:
"atelectasis versus airspace disease"; the engine adds "A/B"), ``neutral`` (looks like a cue but is not:
"no change in").
"""

from __future__ import annotations

from dataclasses import dataclass

OBSERVATIONS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)


@dataclass(frozen=True)
class Rules:
    lang: str
    mentions: tuple[tuple[str, str], ...]
    attr_pos: str  # size attribute making an ANAT mention positive ("enlarged")
    attr_neg: str  # ... negative ("normal")
    cues: tuple[tuple[str, str], ...]
    clause_split: str  # regex; the split keeps delimiters with the preceding clause
    word_bounded: bool  # wrap patterns in \b...\b (English)
    win_pre_unc: int  # how far (chars) an uncertainty cue reaches forward
    win_post: int  # how far back a post cue reaches
    win_two: int  # reach of "versus" on each side


EN = Rules(
    lang="en",
    mentions=(
        ("IGNORE", r"pericardial effusions?|(?:bony|osseous|bone|skeletal) (?:opacit(?:y|ies)|densit(?:y|ies))"
                   r"|soft[\s-]tissue (?:densit(?:y|ies)|opacit(?:y|ies)|mass(?:es)?)|mass effect"
                   r"|(?:bony|osseous|bone|lytic|sclerotic) lesions?|breast (?:densit(?:y|ies)|mass(?:es)?)"),
        ("Enlarged Cardiomediastinum", r"(?:mediastinal|cardiomediastinal) (?:widening|enlargement)"
                                       r"|widened (?:mediastinum|cardiomediastinum)"),
        ("ANAT:Enlarged Cardiomediastinum",
         r"cardio[\s-]?mediastinal(?: (?:silhouette|contours?|size|borders?|shadow|width))?|cardiomediastinum"
         r"|mediastin(?:um|al)(?: (?:silhouette|contours?|width|borders?|size|shadow|configuration))?"),
        ("Cardiomegaly", r"cardiomegaly|cardiac enlargement|enlarged heart"),
        ("ANAT:Cardiomegaly", r"heart(?: size)?|cardiac (?:silhouette|size|contours?|shadow|borders?|diameter)"
                              r"|cardiac(?= and mediastin)|cardiothoracic ratio"),
        ("Lung Lesion", r"mass(?:es)?|nodul(?:e|es|ar)(?: (?:opacit(?:y|ies)|densit(?:y|ies)))?|lesions?"
                        r"|neoplasms?|tumou?rs?|carcinomas?|cancer|malignan\w*|metasta\w*|cavitary lesions?"
                        r"|cavitation|lump"),
        ("Lung Opacity", r"opacit(?:y|ies)|opacification|opacified|infiltrat\w*"
                         r"|air[\s-]?space (?:disease|opacit(?:y|ies)|process)|densit(?:y|ies)|haziness"
                         r"|interstitial (?:markings?|patterns?|opacit(?:y|ies)|prominence|(?:lung )?disease"
                         r"|changes?|thickening)|reticula\w*|reticulonodular|ground[\s-]?glass"
                         r"|scar(?:ring|s)?|scarred|peribronchial (?:thickening|cuffing)|bronchial wall thickening"),
        ("Edema", r"o?edema|heart failure|chf|congestive|(?:pulmonary|vascular|venous) congestion"
                  r"|vascular (?:prominence|engorgement|redistribution)|cephalization|kerley b?\s?lines"),
        ("Consolidation", r"consolidat\w*"),
        ("Pneumonia", r"(?:broncho)?pneumonias?|pneumonitis|infections?|infectious(?: process)?"),
        ("Atelectasis", r"atelecta\w*|collapsed?"),
        ("Pneumothorax", r"pneumothora(?:x|ces|xes)|hydropneumothorax"),
        ("Pleural Effusion", r"(?:pleural )?effusions?|pleural fluid|hydrothorax"
                             r"|fluid in the (?:pleural space|fissures?)"
                             r"|blunting of the (?:\w+ )?costophrenic (?:angles?|sulcus)"
                             r"|(?:costophrenic|cp) (?:angle )?blunting|blunted (?:\w+ )?costophrenic angles?"),
        ("Pleural Other", r"pleural (?:thickening|plaques?|calcifications?|scarring|scar|fibrosis)|fibrothorax"
                          r"|pleural[\s-]?parenchymal (?:scarring|scar|thickening)"
                          r"|apical (?:pleural )?(?:cap|thickening)"),
        ("Fracture", r"fractures?|fractured"),
        ("Support Devices", r"pacemakers?|pacers?|aicd|icd|defibrillators?|(?:pacer|pacemaker|pacing|icd|aicd) leads?"
                            r"|(?:picc|pic|central(?: venous)?|venous|arterial|dialysis|swan[\s-]?ganz|jugular"
                            r"|subclavian|ij) (?:lines?|catheters?)|catheters?"
                            r"|(?:endotracheal|tracheostomy|nasogastric|orogastric|feeding|chest|enteric|ng|og|et"
                            r"|dobhoff|gastrostomy) tubes?|tubes?|stents?|(?:sternotomy|sternal) wires?|sternotomy"
                            r"|(?:prosthetic|mechanical|replacement) (?:heart )?valves?|valve replacement|drains?"
                            r"|port(?:-a-cath)?|support devices?"),
    ),
    attr_pos=r"enlarged|enlargement|large|increased in size|prominent|prominence|widened|widening",
    attr_neg=r"normal|within normal limits|unremarkable|not (?:significantly )?(?:enlarged|widened)"
             r"|no enlargement|no widening",
    cues=(
        ("neutral", r"no (?:significant |substantial |appreciable |interval |definite )?(?:change|increase"
                    r"|decrease|progression|worsening|improvement)|without (?:interval )?change|not only"),
        ("unc_strong", r"(?:cannot|can ?not|could not|can't) (?:be )?(?:entirely |completely )?(?:excluded?|ruled? out)"
                       r"|not (?:be )?(?:entirely |completely )?(?:excluded|ruled out)|difficult to exclude"),
        ("neg_pre", r"no|not|without|negative for|free of|clear of|absence of|resolution of|rather than|nor"
                    r"|neither|removal of|no evidence of|no signs? of|ruled out for"),
        ("neg_post", r"(?:(?:is|are|was|were|has been|have been) )?(?:not|no longer) (?:seen|identified|present"
                     r"|visualized|visible|demonstrated|evident|appreciated|noted|detected|apparent)"
                     r"|(?:has|have) resolved|(?:is|are|has been|have been) (?:absent|removed|excluded|ruled out)"),
        ("neg_either", r"absent|resolved|removed|excluded|ruled out"),
        ("unc_either", r"possib(?:le|ly|ility)|probab(?:le|ly|ility)|likely|suspected|questionable"),
        ("unc_pre", r"may|might|could|unlikely|question(?:ed|ably| of)?|suggest\w*|concern(?:ing)?(?: for)?"
                    r"|suspicio\w*|suspect(?:s|ing)?|consider\w*|differential|borderline|equivocal|indeterminate"
                    r"|uncertain|presum\w*|perhaps"),
        ("unc_post", r"(?:is|are) (?:possible|probable|likely|suspected|questioned|a consideration|considered)"),
        ("unc_two", r"versus|vs\.?|and/or"),
    ),
    clause_split=r"(?<=[;!?\n:])|(?<=(?<!\d)\.)(?!\d)|(?=\b(?:but|however|although|though|except|whereas)\b)",
    word_bounded=True, win_pre_unc=80, win_post=60, win_two=30,
)

ZH = Rules(
    lang="zh",
    mentions=(
        ("IGNORE", r"心包积液|骨质?不透明|骨质?密度|(?:切口|手术|皮肤)(?:疤痕|瘢痕)"),
        ("Enlarged Cardiomediastinum", r"纵[隔膈](?:影)?增宽"),
        ("ANAT:Enlarged Cardiomediastinum", r"心脏纵[隔膈]|心纵[隔膈]|心影纵[隔膈]|心胸廓(?:形)?|心胸轮廓|纵[隔膈](?:影|轮廓)?"),
        ("Cardiomegaly", r"心脏(?:增大|扩大|肿大|肥大)|心影(?:增大|扩大)|心胸比(?:例)?增大"),
        ("ANAT:Cardiomegaly", r"心脏大小|心影大小|心脏轮廓|心影轮廓|心脏|心影|心胸比(?:例)?"),
        ("Lung Lesion", r"结节|肿块|团块|占位|肿瘤|癌|转移(?:瘤|灶)?|空洞"),
        ("Lung Opacity", r"不透明(?:现象|影|区域?)?|阴影|密度增高影?|高密度影|模糊影|斑片(?:状)?影?|片状影|浸润|渗出"
                         r"|磨玻璃(?:影)?|网(?:格)?状(?:影)?|间质(?:性)?(?:改变|病变)|疤痕|瘢痕"
                         r"|(?:气腔|气隙|空隙)(?:疾病|病变|不透明|影)?"),
        ("Edema", r"水肿|肺淤血|肺充血|淤血|心力衰竭|心衰"),
        ("Consolidation", r"实变|固结"),
        ("Pneumonia", r"肺炎|感染|炎症|炎性(?:病变|改变)?|炎变"),
        ("Atelectasis", r"肺不张|不张|肺?膨胀不全|肺萎陷|肺塌陷"),
        ("Pneumothorax", r"液?气胸"),
        ("Pleural Effusion", r"胸腔积液|胸水|积液|肋膈角(?:变钝|钝化|模糊)"),
        ("Pleural Other", r"胸膜(?:增厚|肥厚|粘连|钙化|斑块?)"),
        ("Fracture", r"骨折"),
        ("Support Devices", r"起搏器|除颤器|导管|置管|插管|引流管|鼻?胃管|中心静脉|picc|支架|钢丝|金属(?:丝|夹)"
                            r"|人工瓣膜|瓣膜置换|胸骨(?:正中)?切开术后|支持设备"),
    ),
    attr_pos=r"增大|扩大|肿大|肥大|偏大|饱满|增宽",
    attr_neg=r"正常|不大|未见(?:增大|扩大|增宽)|无(?:增大|扩大|增宽)|不宽|未见异常|无异常",
    cues=(
        ("neutral", r"无明显变化|无变化|未见变化|较前无变化"),
        ("unc_strong", r"不除外|不能除外|不排除|不能排除|未能除外|未除外|待排(?:除)?"),
        ("neg_pre", r"未见明显|未见|未发现|未显示|未探及|未|无明显|无|没有|不伴|排除|否认"),
        ("neg_post", r"消失|已吸收|不明显|阴性|已拔除|已移除"),
        ("unc_either", r"可能(?:为|是|性大)?|可疑"),
        ("unc_pre", r"疑似|怀疑|疑|考虑(?:为)?|提示|倾向(?:于)?|似乎|似为|或许|大概|边缘性|临界|不确定"),
        ("unc_post", r"？|\?"),
        ("unc_two", r"和/或"),
    ),
    clause_split=r"(?<=[。；;！!？?\n，,])|(?=但是|但|然而)",
    word_bounded=False, win_pre_unc=20, win_post=8, win_two=10,
)
