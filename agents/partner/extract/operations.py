"""The action lexicon: a verb as written in a protocol -> one canonical `Operation`.

Verbs are folded to a lemma (`centrifuging` -> `centrifuge`, `pipetted` -> `pipette`,
`re-suspend` -> `resuspend`); phrasal verbs are looked up whole first (`spin down`, `pour off`,
`air dry`, `heat shock`). A few verbs depend on what they act on (`run` a gel is electrophoresis,
`run` a PCR is thermocycling), so `operation_for` also sees the words of its step.
Negated actions (`do not vortex`, `without disturbing`) are cautions, not steps: `is_negated`.
"""

from __future__ import annotations

import re

from mshale_fl.schemas.vocabulary import Operation as Op

_LEXICON: dict[Op, tuple[str, ...]] = {
    Op.ADD: ("add", "apply", "fill", "refill", "supplement", "overlay", "layer", "top up", "spike", "inject",
             "coat", "bring", "pipette in", "drop", "introduce", "feed", "replenish", "acidify", "neutralize",
             "adjust", "addition"),
    Op.TRANSFER: ("transfer", "move", "pour", "load", "pipette", "pipet", "spot", "pick", "deposit", "push",
                  "draw", "draw up", "pass", "collect", "harvest", "recover", "retrieve", "combine", "pool",
                  "transport", "reload", "apply to", "take", "take up into"),
    Op.ALIQUOT: ("aliquot", "dispense", "distribute", "divide", "split", "portion", "array"),
    Op.REMOVE: ("remove", "aspirate", "decant", "pipette off", "pipet off", "pour off", "pour out", "drain",
                "drain off", "drain away", "withdraw", "draw off", "suck", "suck off", "wick away", "blot off",
                "empty", "take off", "wipe away", "wipe off", "dump", "dump out", "take away", "siphon",
                "clear", "strip", "excise", "cut out", "separate", "isolate", "extract", "purify",
                "clean up", "tip off", "flick off", "scrape", "scrape off", "removal"),
    Op.DISCARD: ("discard", "dispose", "throw away", "remove and discard", "toss", "waste"),
    Op.MIX: ("mix", "invert", "pipette up and down", "triturate", "flick", "tap", "swirl", "stir", "resuspend by",
             "emulsify", "blend", "homogenise by", "agitate gently", "disperse"),
    Op.VORTEX: ("vortex", "vortex mix", "vortexe"),
    Op.SHAKE: ("shake", "rock", "rotate", "agitate", "nutate", "roll", "tumble"),
    Op.CENTRIFUGE: ("centrifuge", "spin", "spin down", "pulse spin", "pulse-spin", "quick spin", "pellet",
                    "microfuge", "microcentrifuge", "re-spin", "respin", "re-centrifuge", "recentrifuge",
                    "ultracentrifuge", "pulse", "sediment", "spun"),
    Op.FILTER: ("filter", "filter sterilize", "filter-sterilize", "filtrate", "prefilter", "pass through",
                "strain", "sieve", "ultrafilter", "dialyze", "step dialyze", "desalt"),
    Op.WASH: ("wash", "rinse", "flush", "destain", "wash out", "wash away", "clean", "prewet", "pre-wet",
              "equilibrate", "wipe down", "wipe"),
    Op.ELUTE: ("elute", "re-elute", "reelute"),
    Op.PRECIPITATE: ("precipitate", "reprecipitate", "crystallize", "salt out"),
    Op.ELECTROPHORESE: ("electrophorese", "electrophoresis"),
    Op.INCUBATE: ("incubate", "leave", "sit", "let sit", "stand", "let stand", "hold", "grow", "grow up",
                  "culture", "subculture", "expand", "soak", "immerse", "submerge", "expose", "treat",
                  "hybridize", "anneal", "digest", "block", "probe", "bind", "re-bind", "rebind", "ligate",
                  "incubation", "stimulate", "restimulate", "induce", "activate", "permeabilize", "fix",
                  "react", "develop", "settle", "adsorb", "recover in", "grown", "bound"),
    Op.HEAT: ("heat", "warm", "pre-heat", "preheat", "pre-warm", "prewarm", "boil", "melt", "heat shock",
              "heat-shock", "heat inactivate", "heat-inactivate", "inactivate", "denature", "autoclave",
              "sterilize", "simmer", "microwave", "bake", "heat pulse", "warm up", "reheat", "denaturation"),
    Op.COOL: ("cool", "chill", "pre-chill", "prechill", "ice", "cool down", "place on ice", "quench"),
    Op.FREEZE: ("freeze", "flash freeze", "flash-freeze", "snap freeze", "snap-freeze", "snap", "cryopreserve",
                "refreeze", "freeze-thaw"),
    Op.THAW: ("thaw", "defrost", "unfreeze"),
    Op.THERMOCYCLE: ("thermocycle", "amplify", "pcr", "pcr amplify", "cycle", "reverse transcribe"),
    Op.DRY: ("dry", "air dry", "air-dry", "let dry", "pat dry", "blot dry", "evaporate", "speedvac",
             "speed vac", "dehydrate", "lyophilize", "lyophilise", "desiccate", "blot", "dry down"),
    Op.STORE: ("store", "keep", "kept", "save", "archive", "preserve", "maintain", "retain", "stock", "bank"),
    Op.WAIT: ("wait", "pause", "allow", "let", "rest", "stop", "delay", "idle"),
    Op.RESUSPEND: ("resuspend", "re-suspend", "suspend", "reconstitute", "rehydrate", "hydrate", "redissolve",
                   "re-dissolve", "take up"),
    Op.DILUTE: ("dilute", "make up", "bring up", "rediluted", "serially dilute", "normalize", "normalise"),
    Op.DISSOLVE: ("dissolve", "solubilize", "solubilise", "reconstitute in"),
    Op.HOMOGENIZE: ("homogenize", "homogenise", "grind", "mince", "crush", "disrupt", "bead beat", "bead-beat",
                    "bead beating", "tease", "chop", "pulverize", "macerate", "cut", "slice", "dissect",
                    "trim", "dissociate", "disaggregate", "mash", "fragment", "shear", "trypsinize"),
    Op.LYSE: ("lyse", "lysate", "break open", "lysis"),
    Op.SONICATE: ("sonicate", "sonify", "ultrasonicate"),
    Op.STAIN: ("stain", "counterstain", "counter-stain", "dye", "immunostain", "label with"),
    Op.INOCULATE: ("inoculate", "infect", "transform", "transfect", "electroporate", "transduce", "innoculate",
                   "co-transfect", "cotransfect", "zap"),
    Op.PLATE: ("plate", "spread", "streak", "seed", "plate out", "replate", "re-plate", "passage", "split cells"),
    Op.SEAL: ("seal", "cover", "cap", "close", "wrap", "reseal", "re-seal", "plug", "lock", "tape", "parafilm",
              "recap", "stopper", "tighten", "screw", "clamp", "protect from light"),
    Op.PLACE: ("place", "put", "set", "insert", "re-insert", "reinsert", "mount", "lay", "lay out", "position",
               "return", "float", "immobilize", "attach", "connect", "stick", "slide", "sit on", "stack",
               "arrange", "orient", "embed", "place on", "place in", "secure", "hang", "turn", "open", "uncap",
               "unscrew", "unseal", "remove lid", "switch on", "turn on", "switch off", "turn off", "start"),
    Op.PREPARE: ("prepare", "make", "set up", "setup", "set-up", "assemble", "prep", "construct", "create",
                 "generate", "label", "mark", "preare", "configure", "program", "calibrate", "zero", "tare",
                 "blank", "pre-equilibrate", "pre-label", "prelabel", "pour a gel", "cast", "synthesize",
                 "design", "order", "obtain", "get", "thaw and prepare", "reconstruct", "formulate"),
    Op.MEASURE: ("measure", "count", "determine", "quantify", "quantitate", "read", "record", "weigh",
                 "weigh out", "check", "monitor", "assess", "assay", "analyze", "analyse", "examine", "observe",
                 "image", "visualize", "visualise", "photograph", "calculate", "estimate", "evaluate",
                 "inspect", "verify", "confirm", "sequence", "test", "scan", "detect", "take measurement",
                 "look", "look for", "note", "score", "screen", "plot", "graph", "compare", "view", "inspect",
                 "titrate", "acquire", "track", "enumerate", "sample", "take a sample", "identify", "see",
                 "find", "quantitation", "plaque assay", "western blot", "measure od"),
    Op.REPEAT: ("repeat", "redo", "re-do", "repeat steps", "perform again"),
}  # fmt: skip

LEXICON: dict[str, Op] = {}
for _operation, _phrases in _LEXICON.items():
    for _phrase in _phrases:
        LEXICON.setdefault(_phrase, _operation)

_NEGATION = re.compile(r"(?i)\b(?:do\s+not|don['’]t|never|avoid|without|not\s+to|not)\b")
_SEPARATORS = re.compile(r"[\s\u00a0_-]+")


def _candidates(word: str) -> list[str]:
    """Lemma guesses for one inflected word, most specific first."""
    found = [word]
    if word.endswith("ing") and len(word) > 5:
        stem = word[:-3]
        found += [stem, stem + "e"]
        if len(stem) > 2 and stem[-1] == stem[-2]:
            found.append(stem[:-1])  # pipetting -> pipett -> pipet(te), spinning -> spin
            found.append(stem[:-1] + "e")
    if word.endswith("ied"):
        found.append(word[:-3] + "y")
    if word.endswith("ed") and len(word) > 4:
        stem = word[:-2]
        found += [stem, word[:-1]]
        if len(stem) > 2 and stem[-1] == stem[-2]:
            found.append(stem[:-1])
    if word.endswith("es") and len(word) > 4:
        found.append(word[:-2])
    if word.endswith("s") and len(word) > 3:
        found.append(word[:-1])
    return found


def lemma(phrase: str) -> str | None:
    """The lexicon entry a written action matches, or None if it is not a known action."""
    words = _SEPARATORS.sub(" ", phrase.strip().lower()).split(" ")
    words = [w for w in words if w]
    if not words:
        return None
    joined = " ".join(words)
    if joined in LEXICON:
        return joined
    for candidate in _candidates(words[0]):
        phrase_candidate = " ".join([candidate, *words[1:]])
        if phrase_candidate in LEXICON:
            return phrase_candidate
    for candidate in _candidates(words[0]):
        if candidate in LEXICON:
            return candidate
    if len(words) > 1:
        # "remove and discard", "gently mix": the last known verb decides
        for word in reversed(words):
            for candidate in _candidates(word):
                if candidate in LEXICON:
                    return candidate
    return None


def is_known_action(word: str) -> bool:
    return lemma(word) is not None


_GEL = re.compile(r"(?i)\bgels?\b|electrophores|agarose|sds-page|\bpage\b")
_PCR = re.compile(r"(?i)\bpcr\b|cycler|thermocycl|\bprogram\b|\bqpcr\b|\bcycles?\b")
_COLUMN = re.compile(r"(?i)\bcolumns?\b|\bresin\b|\bcartridge\b")


def operation_for(action: str, step_text: str = "") -> Op:
    """The canonical operation of one written action, using its step's words for ambiguous verbs."""
    key = lemma(action)
    if key is None and _SEPARATORS.sub(" ", action.strip().lower()) in ("run", "running", "ran"):
        key = "run"  # not in the lexicon: what is run decides (a gel, a PCR, or something else)
    if key is None:
        return Op.OTHER
    if key == "run":
        if _GEL.search(step_text):
            return Op.ELECTROPHORESE
        return Op.THERMOCYCLE if _PCR.search(step_text) else Op.OTHER
    if key == "load" and _GEL.search(step_text):
        return Op.ELECTROPHORESE
    if key == "pass" and _COLUMN.search(step_text):
        return Op.FILTER
    return LEXICON[key]


def is_negated(text_before: str) -> bool:
    """True when the words just before an action negate it (`do not`, `without`, `avoid`)."""
    tail = text_before[-24:]
    return bool(_NEGATION.search(tail)) and not re.search(r"[.;:]\s*\S+\s*$", tail)
