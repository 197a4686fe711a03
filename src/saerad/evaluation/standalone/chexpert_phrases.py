"""Phrase lists of the rule-based CheXpert-style labeler: mentions, exclusions, triggers, modifiers.

Patterns are regular expressions over lower-cased text, matched on word boundaries. They follow the published
CheXpert labeler's approach (mention phrases per observation, unmention phrases, NegBio-style negation and
uncertainty cues) and were extended on the IU X-ray reports whose id is not divisible by 5.
"""

OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
TOP5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
# Observations beyond CheXpert's 14 that chest X-ray reports state often: mentioned, negated and lateralised like the
# others, used to describe and score features, never in the CheXpert labels of a report (nor its No Finding rule).
EXTRA_OBSERVATIONS = (
    "Hyperinflation", "Low Lung Volumes", "Elevated Hemidiaphragm", "Tortuous Aorta", "Aortic Calcification",
    "Hiatal Hernia", "Degenerative Spine", "Spinal Curvature", "Osteopenia",
)

# Phrases that mention an observation (status decided by the triggers around them).
MENTIONS = {
    "Enlarged Cardiomediastinum": [
        r"(widen(ed|ing)|enlarge(d|ment)|prominen(t|ce)) (of )?(the )?(cardio)?mediastin(um|al)( (silhouette|contours?|width))?",
        r"(cardio)?mediastin(um|al) (silhouette |contours? |width )?(is |are |appears? )?(widened|enlarged|prominent)",
        r"mediastinal (widening|enlargement|prominence|mass|lipomatosis)", r"widened mediastinum",
        r"enlarged cardiomediastinal silhouette",
    ],
    "Cardiomegaly": [
        r"cardiomegaly", r"cardiac (enlargement|hypertrophy)", r"enlarge(d|ment of the) (heart|cardiac (silhouette|shadow))",
        r"(heart|cardiac silhouette|cardiac shadow)( size)? (is |are |appears? |remains? )?(mildly |moderately |severely |markedly |slightly )?(enlarged|large|prominent|increased)",
        r"(heart|cardiac) size (is |appears? |remains? )?(mildly |moderately |slightly )?(enlarged|increased|large|prominent)",
        r"(enlarged|prominent|large) (heart|cardiac (silhouette|shadow|size))", r"cardiomyopathy",
    ],
    "Lung Lesion": [
        r"nodules?", r"nodular (densit(y|ies)|opacit(y|ies)|lesions?)", r"mass(es)?", r"lesions?", r"neoplasms?",
        r"tumou?rs?", r"carcinoma", r"metasta(sis|ses|tic)", r"granulomas?", r"granulomatous",
        r"cavitary lesions?", r"lumps?", r"cysts?",
    ],
    "Lung Opacity": [
        r"opaci(ty|ties|fication|fied)", r"infiltrat(e|es|ion|ive)", r"air ?space (disease|opacit(y|ies))",
        r"densit(y|ies)", r"reticula(r|tion)", r"reticulonodular", r"interstitial (markings?|opacit(y|ies)|disease|prominence|pattern|thickening|changes?|lung disease)",
        r"ground[- ]glass", r"hazy", r"haziness", r"scar(ring|s)?", r"fibros(is|tic)", r"fibrotic",
        r"(increased|prominent|coarse|coarsened) (lung |interstitial |bronchovascular |pulmonary )?markings",
        r"bronchiectasis", r"bronchial wall thickening", r"peribronchial (thickening|cuffing)",
    ],
    "Edema": [
        r"edema", r"(heart|cardiac) failure", r"\bchf\b", r"(vascular|pulmonary|venous|interstitial) (congestion|engorgement)",
        r"congestion", r"(pulmonary )?vascular (prominence|redistribution)", r"cephalization",
        r"kerley( b)? lines",
    ],
    "Consolidation": [r"consolidat(ion|ions|ive|ed)"],
    "Pneumonia": [r"pneumonias?", r"infections?", r"infectious (process|etiology)", r"infectious", r"bronchopneumonia"],
    "Atelectasis": [r"atelecta(sis|ses|tic)", r"collapse", r"volume loss", r"plate[- ]like"],
    "Pneumothorax": [r"pneumothora(x|ces)", r"hydropneumothorax", r"pneumothoraces"],
    "Pleural Effusion": [
        r"(pleural )?effusions?", r"pleural fluid", r"hydrothorax", r"hydropneumothorax",
        r"(blunt(ed|ing)|obliterat(ed|ion)) (of )?(the )?((left|right|bilateral|both|lateral|posterior) )*(costophrenic|cp)( (angles?|recess(es)?|sulc(us|i)))?",
        r"(costophrenic|cp)( (angles?|recess(es)?|sulc(us|i)))? (is |are )?(blunted|obliterated)",
        r"fluid in the (major |minor )?fissure",
    ],
    "Pleural Other": [
        r"pleural (thickening|plaques?|scar(ring)?|calcifications?|reaction)", r"fibrothorax", r"apical (pleural )?cap",
        r"pleural[- ]parenchymal scar(ring)?", r"pleural based (opacity|density|thickening)",
    ],
    "Fracture": [r"fractur(e|es|ed)", r"\bfx\b"],
    "Support Devices": [
        r"pacemakers?", r"pacers?", r"(pacing |pacemaker )?leads?", r"\b(picc|icd|aicd|ett?|ngt?|og)\b", r"defibrillators?",
        r"catheters?", r"(central venous |venous |central |picc |port[- ]a[- ]cath |swan[- ]ganz )lines?",
        r"(endotracheal|nasogastric|orogastric|feeding|chest|tracheostomy|enteric|dobhoff|gastric) tubes?",
        r"\btubes?\b", r"port[- ]?a[- ]?caths?", r"(sternotomy|sternal) (wires|sutures)", r"sternotomy",
        r"(surgical |vascular )?clips", r"stents?", r"(prosthetic )?valve replacement", r"prosthe(sis|tic valve)",
        r"(orthopedic |spinal )?hardware", r"drains?", r"devices?", r"(embolization )?coils?", r"wires?",
    ],
    "Hyperinflation": [
        r"(hyper|over)-?(inflat(ed|ion)|expan(ded|sion)|aerat(ed|ion))", r"emphysema(tous)?",
        r"\bcopd\b", r"chronic obstructive (pulmonary|lung) disease", r"hyperlucen(t|cy)",
        r"flatten(ed|ing) (of )?(the )?((left|right|both|bilateral) )?(hemi)?diaphragms?",
    ],
    "Low Lung Volumes": [
        r"low (lung )?volumes?", r"(lung )?volumes (are |is )?(low|decreased|diminished|reduced)",
        r"(decreased|diminished|reduced) lung volumes?", r"hypo-?(inflat|ventilat)(ed|ion)",
        r"(poor|shallow|suboptimal|low) inspirat(ion|ory( effort)?)",
    ],
    "Elevated Hemidiaphragm": [
        r"elevat(ed|ion)( of)?( the)? ((left|right) )?hemi-?diaphragms?",
        r"hemi-?diaphragms? (is |are |remains? )?(mildly |slightly |markedly )?elevated",
    ],
    "Tortuous Aorta": [
        r"tortu(ous|osity)", r"ectati?c (thoracic )?aort(a|ic)", r"aortic ectasia", r"unfold(ed|ing)( of)?( the)? aort(a|ic)",
    ],
    "Aortic Calcification": [
        r"(aortic|aorta) (knob |knuckle |arch )?calcifi(cation|cations|ed)", r"atherosclero(sis|tic)",
        r"calcifi(ed|cation|cations) (of |in )?(the )?(thoracic )?(aortic|aorta)", r"calcified (thoracic )?aort(a|ic)",
    ],
    "Hiatal Hernia": [r"hiatal hernias?", r"hiatus hernias?"],
    "Degenerative Spine": [
        r"degenerative (changes?|disease|endplate|disc|spurring)", r"spondylo(sis|tic)", r"osteophyt(e|es|osis|ic)",
        r"\bdish\b", r"diffuse idiopathic skeletal hyperostosis", r"(spurring|spurs?) of the (thoracic )?spine",
    ],
    "Spinal Curvature": [r"(dextro|levo)?scolio(sis|tic)", r"(dextro|levo)convex", r"kypho(sis|tic)"],
    "Osteopenia": [r"osteopeni(a|c)", r"(bone )?demineraliz(ed|ation)", r"osteoporo(sis|tic)"],
}

# Phrases that contain a mention word but do not mention the observation.
UNMENTIONS = {
    "Lung Lesion": [r"mass effect", r"soft tissue mass", r"breast mass", r"nodular contour",
                    r"(osseous|bony|bone|lytic|blastic|sclerotic|skeletal|skin|cutaneous) lesions?"],
    "Lung Opacity": [r"pleural[- ]parenchymal scar(ring)?", r"bone density", r"breast (density|tissue)",
                     r"soft tissue densit(y|ies)", r"nipple (shadows?|densit(y|ies))", r"scar(ring)? .{0,20}sternotomy",
                     r"opacity.{0,20}(mediastin|hilar|hil(a|um))"],
    "Pleural Effusion": [r"pericardial effusions?"],
    "Support Devices": [r"lead(s)? to", r"might lead", r"(line|lines) of", r"midline", r"pleural line",
                        r"lines? (is|are) (seen|not)", r"skin fold", r"ngt? (is )?noted"],
    "Edema": [r"soft tissue edema"],
    "Atelectasis": [r"collapse of the (vertebra|vertebral|spine)", r"vertebral (body )?collapse"],
    "Fracture": [r"no acute (bony|osseous) (abnormality|findings?)"],
}

# Statements of a normal study (sentence level; a report's No Finding follows the CheXpert rule instead).
NO_FINDING = [
    r"no (acute |active )?(cardiopulmonary|intrathoracic|pulmonary|chest|cardiac or pulmonary) (process|abnormalit(y|ies)|disease|findings?|pathology)",
    r"no acute (abnormalit(y|ies)|findings?|process|disease)", r"normal (chest|study|radiograph|examination|exam)",
    r"no (radiographic )?evidence of (acute |active )?(cardiopulmonary )?disease",
    r"(unremarkable|negative) (chest|study|radiograph|examination|exam)",
]

# Anatomy that counts as a mention only with a qualifier: (observation, anatomy, abnormal, normal).
QUALIFIED = [
    ("Cardiomegaly", r"(heart( size)?|cardiac (silhouette|size|shadow|contour)|cardiac and mediastinal (silhouettes?|contours?))",
     r"enlarged|enlargement|increased|prominent|large|upper limits of normal|top normal|borderline",
     r"normal|within normal limits|unremarkable|not enlarged|stable|unchanged|upper normal"),
    ("Enlarged Cardiomediastinum", r"((cardio)?mediast(inal|inum)( size)?( silhouette| contours?| width)?|heart and mediastinum|hilar and mediastinal contours)",
     r"widened|widening|enlarged|enlargement|prominent|prominence",
     r"normal|within normal limits|unremarkable|not (enlarged|widened)|stable|unchanged"),
]

# Triggers. Pseudo-negations look like negations but are not; they are consumed first.
PSEUDO = [
    r"no (significant |interval |definite )?(change|increase|decrease|worsening|improvement)( in)?",
    r"not (significantly )?changed", r"not only", r"without (significant |interval )?change", r"gram[- ]negative",
    r"no further", r"with or without", r"not (been )?(well )?(evaluated|assessed)",
]
NEG_PRE = [
    r"no", r"not", r"without", r"free of", r"negative for", r"no (radiographic |definite |convincing )?(evidence|signs?|findings?) (of|for|to suggest)",
    r"absence of", r"resolution of", r"resolved", r"clear of", r"rather than", r"removal of", r"never",
    r"no (new|acute|focal|large|significant|visible|definite|displaced|obvious|residual|evident)", r"nor",
    r"there is no", r"there are no", r"cleared", r"interval (resolution|removal) of",
]
NEG_POST = [
    r"(is|are|has been|have been|was|were)? ?(now )?(resolved|absent|removed|cleared|gone)", r"(has|have) resolved",
    r"(is|are|was|were) not (seen|present|identified|appreciated|visualized|evident|demonstrated|detected)",
    r"not (seen|present|identified|appreciated|visualized|evident|demonstrated|detected)", r"ruled out",
    r"(is|are|appears?|remains?) (within (the )?(normal limits|limits of normal)|normal|unremarkable)",
    r"within (the )?(normal limits|limits of normal)", r"no longer (seen|present|visualized)", r"not enlarged",
    r"(is|are) negative",
]
UNC_PRE = [
    r"may( be| represent)?", r"might", r"possibl[ey]", r"probabl[ey]", r"likely", r"questionable", r"question of",
    r"suspicious (for|of)", r"suspect(ed)?", r"suggest(s|ive of|ing)?", r"cannot (be )?(excluded|excluded|ruled out)",
    r"can ?not (exclude|rule out|be excluded|be ruled out)", r"could( be| represent)?", r"concern(ing)? (for|of)",
    r"differential (diagnosis )?(includes|considerations)", r"consider(ed)?", r"presum(ed|ably)", r"perhaps",
    r"equivocal", r"versus", r"\bvs\.?", r"worrisome for",
    r"(may|might|could) reflect", r"(not|cannot) (be )?entirely excluded", r"indeterminate",
    r"evaluate for", r"to (exclude|rule out)", r"r/o", r"rule out", r"cannot exclude", r"can not exclude",
    r"difficult to exclude", r"not excluded", r"uncertain", r"appears? to (be|represent)",
    r"raises the possibility of",
]
UNC_POST = [
    r"(is|are)? ?(not|cannot be|can not be) (excluded|ruled out)", r"(is|are) (possible|suspected|questioned|likely|not excluded)",
    r"versus", r"\bvs\.?", r"(could|may|might) be (present|considered)", r"(is|are) (a )?consideration",
]
# Words that end the scope of a trigger (ConText-style termination).
TERMINATORS = [
    r"but", r"however", r"although", r"though", r"which", r"aside from", r"apart from", r"except( for)?",
    r"otherwise", r"there (is|are|has been|have been)", r"(is|are) (seen|noted|present|again|demonstrated|identified)",
    r"with", r"and there", r"while", r"whereas", r"due to", r"secondary to", r"since", r"given", r"yet", r"still",
    r"[;:]", r"\bwhich\b", r"\bnow\b", r"\bstable\b", r"\bpersistent\b", r"\bunchanged\b",
]

LATERALITY = [
    (r"bilateral(ly)?|both|bibasilar|bibasal|bi-?apical|right and left|left and right", "bilateral"),
    (r"left|left-sided|lingula(r)?", "left"),
    (r"right|right-sided", "right"),
]
SEVERITY = [
    (r"trace|tiny|minimal|minute|small|subtle", "small"),
    (r"mild(ly)?|slight(ly)?|borderline|minor", "mild"),
    (r"moderate(ly)?", "moderate"),
    (r"large|massive|extensive|marked(ly)?|substantial|huge", "large"),
    (r"severe(ly)?", "severe"),
]

# Anatomical section of each observation, as the report composer groups sentences.
SECTION_OF = {
    "No Finding": "other", "Enlarged Cardiomediastinum": "heart/mediastinum", "Cardiomegaly": "heart/mediastinum",
    "Lung Lesion": "lungs", "Lung Opacity": "lungs", "Edema": "lungs", "Consolidation": "lungs", "Pneumonia": "lungs",
    "Atelectasis": "lungs", "Pneumothorax": "pleura", "Pleural Effusion": "pleura", "Pleural Other": "pleura",
    "Fracture": "bones", "Support Devices": "devices",
    "Hyperinflation": "lungs", "Low Lung Volumes": "lungs", "Elevated Hemidiaphragm": "pleura",
    "Tortuous Aorta": "heart/mediastinum", "Aortic Calcification": "heart/mediastinum",
    "Hiatal Hernia": "heart/mediastinum", "Degenerative Spine": "bones", "Spinal Curvature": "bones",
    "Osteopenia": "bones",
}
