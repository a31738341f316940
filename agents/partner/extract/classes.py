"""Closed-class lexicons: equipment, labware and reagent classes of a step; domain and organism of a protocol.

Each class is a list of keyword patterns (whole words, case-insensitive, plurals allowed). Only
the class (an enum member) is kept, never the matched words, so a brand or an in-house reagent
name cannot reach a spec. Words inside an action span are not read as equipment (`Centrifuge for
1 min` is an action, `place in the centrifuge` names a device).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from mshale_fl.schemas.vocabulary import (
    Domain,
    EquipmentClass,
    LabwareClass,
    Organism,
    ReagentClass,
)


def _compile(table: dict, flags: int = re.IGNORECASE, not_before: str = "") -> list[tuple[object, re.Pattern[str]]]:
    tail = r"(?![\w])" + (rf"(?!\s*(?:{not_before})\b)" if not_before else "")
    return [(member, re.compile(r"(?<![\w-])(?:" + "|".join(words) + r")" + tail, flags)) for member, words in table.items()]


_EQUIPMENT = _compile({
    EquipmentClass.MICROCENTRIFUGE: [r"micro-?centrifuges?", r"microfuges?", r"table-?top centrifuges?",
                                     r"bench-?top centrifuges?", r"mini-?centrifuges?", r"mini ?spin"],
    EquipmentClass.CENTRIFUGE: [r"centrifuges?", r"ultracentrifuges?", r"rotors?"],
    EquipmentClass.THERMOCYCLER: [r"thermo-?cyclers?", r"thermal cyclers?", r"pcr machines?", r"pcr cyclers?",
                                  r"qpcr (?:machine|instrument)s?", r"light ?cycler"],
    EquipmentClass.INCUBATOR: [r"incubators?", r"co2 incubators?"],
    EquipmentClass.WATER_BATH: [r"water ?baths?", r"(?:ice|hot)-?water baths?"],
    EquipmentClass.HEAT_BLOCK: [r"heat(?:ing)? ?blocks?", r"thermo-?blocks?", r"dry baths?", r"thermomixers?",
                                r"heating blocks?", r"hot ?plates?", r"block heaters?"],
    EquipmentClass.VORTEXER: [r"vortex(?:er|ers| mixer| genie)", r"disruptor genie"],
    EquipmentClass.SHAKER: [r"shakers?", r"shaking incubators?", r"orbital shakers?", r"platform shakers?"],
    EquipmentClass.ROTATOR: [r"rotators?", r"rockers?", r"rotating wheels?", r"nutators?", r"tube rotators?"],
    EquipmentClass.PIPETTE: [r"pipettes?", r"pipettors?", r"micropipettes?", r"multichannel pipettes?",
                             r"serological pipettes?", r"pasteur pipettes?", r"pipets?"],
    EquipmentClass.SPECTROPHOTOMETER: [r"spectrophotometers?", r"nano-?drop", r"qubit", r"bioanalyzer",
                                       r"tapestation", r"fluorometers?"],
    EquipmentClass.PLATE_READER: [r"plate readers?", r"microplate readers?", r"elisa readers?"],
    EquipmentClass.FLOW_CYTOMETER: [r"flow cytometers?", r"facs", r"cell sorters?", r"flowcam"],
    EquipmentClass.GEL_BOX: [r"gel (?:box|tank|apparatus|rig)s?", r"electrophoresis (?:chamber|unit|tank|apparatus)s?"],
    EquipmentClass.TRANSILLUMINATOR: [r"transilluminators?", r"gel doc", r"uv light box", r"blue light"],
    EquipmentClass.MAGNET: [r"magnets?", r"magnetic (?:stand|rack|separator)s?"],
    EquipmentClass.SONICATOR: [r"sonicators?", r"sonication bath", r"bioruptor", r"covaris"],
    EquipmentClass.HOMOGENIZER: [r"homogeni[sz]ers?", r"bead ?beaters?", r"tissue ?lysers?", r"pestles?",
                                 r"mortar", r"dounce", r"polytron"],
    EquipmentClass.VACUUM_CONCENTRATOR: [r"speed-?vac", r"vacuum concentrators?", r"lyophili[sz]ers?"],
    EquipmentClass.AUTOCLAVE: [r"autoclaves?"],
    EquipmentClass.BALANCE: [r"balances?", r"scales?"],
    EquipmentClass.PH_METER: [r"ph meters?", r"ph probes?"],
    EquipmentClass.ELECTROPORATOR: [r"electroporators?", r"gene pulser", r"nucleofectors?", r"electroporation (?:system|device)"],
    EquipmentClass.FREEZER: [r"freezers?", r"-80 ?°?c freezer", r"liquid nitrogen tank"],
    EquipmentClass.FRIDGE: [r"fridges?", r"refrigerators?", r"cold room"],
    EquipmentClass.HOOD: [r"hoods?", r"biosafety cabinets?", r"laminar flow", r"fume ?hoods?", r"tissue culture hood"],
    EquipmentClass.MICROSCOPE: [r"microscopes?", r"confocal", r"stereoscopes?", r"dissecting scope"],
}, not_before=r"tubes?|strips?|bottles?|rotors?|slides?|tips?|cuvettes?")  # a device word naming labware  # fmt: skip

_LABWARE = _compile({
    LabwareClass.PCR_TUBE: [r"pcr tubes?", r"pcr strips?", r"8-?strip tubes?", r"0\.2 ?ml tubes?", r"pcr plates?"],
    LabwareClass.MICROTUBE: [r"micro-?centrifuge tubes?", r"microfuge tubes?", r"eppendorf(?: tubes?)?",
                             r"1\.5 ?-?ml (?:\w+ )?tubes?", r"2 ?-?ml (?:\w+ )?tubes?", r"micro-?tubes?",
                             r"lo-?bind tubes?", r"screw-?cap tubes?"],
    LabwareClass.CONICAL_TUBE: [r"conicals?", r"conical tubes?", r"falcon(?: tubes?)?", r"15 ?-?ml (?:\w+ )?tubes?",
                                r"50 ?-?ml (?:\w+ )?tubes?"],
    LabwareClass.CRYOVIAL: [r"cryo-?vials?", r"cryo-?tubes?", r"cryogenic vials?"],
    LabwareClass.TUBE: [r"tubes?", r"vials?"],
    LabwareClass.PLATE: [r"plates?", r"\d+-?well", r"wells?", r"microplates?", r"multiwell"],
    LabwareClass.FLASK: [r"flasks?", r"erlenmeyers?", r"t-?\d{2,3}"],
    LabwareClass.BEAKER: [r"beakers?"],
    LabwareClass.BOTTLE: [r"bottles?", r"jars?", r"carboys?"],
    LabwareClass.COLUMN: [r"columns?", r"spin columns?", r"cartridges?", r"filter units?"],
    LabwareClass.DISH: [r"dish(?:es)?", r"petri", r"petri dish(?:es)?"],
    LabwareClass.SLIDE: [r"slides?", r"microscope slides?"],
    LabwareClass.COVERSLIP: [r"cover ?slips?", r"cover ?glass(?:es)?"],
    LabwareClass.CUVETTE: [r"cuvettes?", r"electroporation cuvettes?"],
    LabwareClass.PIPETTE_TIP: [r"tips?", r"pipette tips?", r"filter tips?"],
    LabwareClass.SYRINGE: [r"syringes?", r"needles?"],
    LabwareClass.MEMBRANE: [r"membranes?", r"filter papers?", r"whatman", r"nitrocellulose", r"pvdf"],
    LabwareClass.GEL: [r"gels?", r"agarose gels?", r"sds-?page gels?"],
})  # fmt: skip

_REAGENTS = _compile({
    ReagentClass.WATER: [r"water", r"h2o", r"ddh2o", r"dh2o", r"milli-?q", r"mq"],
    ReagentClass.BUFFER: [r"buffers?", r"pbs", r"tbs", r"tbst?", r"pbst", r"te", r"tae", r"tbe", r"hepes",
                          r"tris(?:-hcl)?", r"ssc", r"saline", r"sodium phosphate", r"mops", r"dpbs", r"hbss"],
    ReagentClass.ENZYME: [r"enzymes?", r"proteinase k", r"rnase(?: a)?", r"dnase(?: i)?", r"polymerases?",
                          r"taq", r"ligases?", r"trypsin", r"lysozyme", r"collagenase", r"kinases?",
                          r"phosphatases?", r"reverse transcriptase", r"superscript", r"ecori", r"bamhi",
                          r"hindiii", r"noti", r"xhoi", r"restriction enzymes?", r"pepsin", r"papain",
                          r"dispase", r"accutase", r"cas9", r"exonucleases?", r"endonucleases?"],
    ReagentClass.NUCLEIC_ACID: [r"dna", r"rna", r"cdna", r"gdna", r"mrna", r"plasmids?", r"oligos?",
                                r"oligonucleotides?", r"templates?", r"amplicons?", r"libraries", r"sgrna",
                                r"grna", r"sirna", r"vectors?", r"inserts?"],
    ReagentClass.PRIMER: [r"primers?", r"probes?"],
    ReagentClass.NUCLEOTIDE: [r"dntps?", r"ntps?", r"nucleotides?", r"datp", r"dctp", r"dgtp", r"dttp"],
    ReagentClass.SALT: [r"nacl", r"kcl", r"mgcl2", r"cacl2", r"mgso4", r"sodium chloride", r"potassium chloride",
                        r"magnesium chloride", r"sodium acetate", r"ammonium acetate", r"ammonium sulfate",
                        r"salts?", r"naoac", r"licl", r"potassium acetate", r"kac", r"kh2po4", r"na2hpo4"],
    ReagentClass.DETERGENT: [r"sds", r"triton(?: x-100)?", r"tween(?: ?-?20)?", r"np-?40", r"detergents?",
                             r"saponin", r"chaps", r"sarkosyl", r"digitonin", r"deoxycholate"],
    ReagentClass.ALCOHOL: [r"ethanol", r"etoh", r"isopropanol", r"methanol", r"isopropyl alcohol", r"alcohol",
                           r"isoamyl alcohol", r"butanol"],
    ReagentClass.ORGANIC_SOLVENT: [r"chloroform", r"phenol", r"trizol", r"dmso", r"acetone", r"xylene",
                                   r"acetonitrile", r"hexane", r"sevag", r"formamide", r"ether"],
    ReagentClass.ACID: [r"hcl", r"acetic acid", r"formic acid", r"tfa", r"trifluoroacetic acid", r"acids?",
                        r"nitric acid", r"hno3", r"sulfuric acid", r"tca", r"citric acid"],
    ReagentClass.BASE: [r"naoh", r"koh", r"sodium hydroxide", r"potassium hydroxide", r"ammonia", r"ammonium hydroxide"],
    ReagentClass.CHELATOR: [r"edta", r"egta"],
    ReagentClass.REDUCING_AGENT: [r"dtt", r"β-?mercaptoethanol", r"beta-?mercaptoethanol", r"2-?mercaptoethanol",
                                  r"b-?me", r"tcep", r"dithiothreitol"],
    ReagentClass.FIXATIVE: [r"pfa", r"paraformaldehyde", r"formaldehyde", r"formalin", r"glutaraldehyde", r"fixatives?"],
    ReagentClass.ANTIBODY: [r"antibod(?:y|ies)", r"igg", r"anti-[\w-]+", r"secondary", r"primary ab"],
    ReagentClass.PROTEIN: [r"bsa", r"proteins?", r"albumin", r"milk", r"gelatin", r"streptavidin", r"casein",
                           r"blocking (?:buffer|solution)"],
    ReagentClass.SERUM: [r"fbs", r"fcs", r"serum", r"sera"],
    ReagentClass.MEDIUM: [r"media", r"medium", r"lb", r"dmem", r"rpmi", r"broth", r"agar", r"soc", r"sob", r"ypd",
                          r"mem", r"opti-?mem", r"2xyt", r"tb medium", r"m9"],
    ReagentClass.ANTIBIOTIC: [r"ampicillin", r"kanamycin", r"chloramphenicol", r"tetracycline", r"streptomycin",
                              r"penicillin", r"pen-?strep", r"antibiotics?", r"carbenicillin", r"spectinomycin",
                              r"gentamicin", r"hygromycin", r"puromycin", r"blasticidin", r"zeocin", r"g418"],
    ReagentClass.SUGAR: [r"glucose", r"sucrose", r"glycerol", r"sorbitol", r"mannitol", r"galactose", r"glycogen",
                         r"trehalose", r"iptg", r"x-gal", r"arabinose", r"lactose", r"maltose"],
    ReagentClass.DYE: [r"dapi", r"hoechst", r"ethidium bromide", r"etbr", r"sybr(?: \w+)?", r"gelred", r"gelgreen",
                       r"propidium iodide", r"trypan blue", r"crystal violet", r"coomassie", r"dyes?", r"stains?",
                       r"loading dye", r"bromophenol blue", r"eosin", r"hematoxylin", r"fluorescein", r"picogreen"],
    ReagentClass.BEADS: [r"beads?", r"ampure", r"dynabeads?", r"resin", r"agarose beads", r"magnetic particles"],
    ReagentClass.CELLS: [r"cells?", r"cultures?", r"bacteria", r"colon(?:y|ies)", r"competent cells", r"pellets?",
                         r"suspension", r"lysates?", r"strains?", r"spores?", r"clones?"],
    ReagentClass.TISSUE: [r"tissues?", r"biops(?:y|ies)", r"organs?", r"leaf", r"leaves", r"brains?", r"livers?",
                          r"embryos?", r"seeds?", r"roots?", r"blood", r"plasma", r"swabs?", r"stool", r"feces",
                          r"soil", r"sediment"],
    ReagentClass.KIT_REAGENT: [r"kits?", r"master ?mix", r"mastermix", r"solution [a-z0-9]\b", r"buffer [a-z0-9]{1,4}\b",
                               r"reagent [a-z0-9]\b", r"wash buffer", r"elution buffer", r"lysis buffer",
                               r"binding buffer", r"neutralization buffer", r"resuspension buffer"],
})  # fmt: skip

_ORGANISMS = _compile({
    Organism.HUMAN: [r"human", r"patients?", r"hela", r"hek ?293\w*", r"pbmcs?", r"homo sapiens", r"jurkat",
                     r"ipscs?", r"hepg2", r"mcf-?7", r"a549", r"u2os", r"k562"],
    Organism.MOUSE: [r"mouse", r"mice", r"murine", r"mus musculus", r"nih ?3t3", r"3t3", r"c57bl/6\w*"],
    Organism.RAT: [r"rats?", r"rattus", r"sprague[- ]dawley", r"wistar"],
    Organism.E_COLI: [r"e\. ?coli", r"escherichia coli", r"dh5α", r"dh5a(?:lpha)?", r"bl21\w*", r"top10", r"xl1-blue"],
    Organism.YEAST: [r"yeast", r"saccharomyces", r"s\. ?cerevisiae", r"pichia", r"s\. ?pombe", r"candida"],
    Organism.PLANT: [r"arabidopsis", r"plants?", r"seedlings?", r"tobacco", r"nicotiana", r"rice", r"maize",
                     r"leaf", r"leaves", r"chlamydomonas", r"algae", r"algal", r"tomato", r"wheat"],
    Organism.DROSOPHILA: [r"drosophila", r"fruit ?fl(?:y|ies)", r"larvae"],
    Organism.ZEBRAFISH: [r"zebrafish", r"danio"],
    Organism.C_ELEGANS: [r"c\. ?elegans", r"caenorhabditis", r"worms?", r"nematodes?", r"hermaphrodites?"],
    Organism.XENOPUS: [r"xenopus", r"frogs?"],
    Organism.VIRUS: [r"virus(?:es)?", r"viral", r"phages?", r"bacteriophages?", r"lentivir\w*", r"aav",
                     r"adenovir\w*", r"retrovir\w*", r"virions?"],
    Organism.OTHER_BACTERIUM: [r"bacillus", r"pseudomonas", r"staphylococcus", r"streptococcus", r"salmonella",
                               r"mycobacter\w*", r"streptomyces", r"synechococcus", r"cyanobacteria\w*",
                               r"vibrio", r"listeria", r"clostridium", r"lactobacillus", r"agrobacterium"],
})  # fmt: skip

_DOMAINS = _compile({
    Domain.MOLECULAR_BIOLOGY: [r"plasmids?", r"pcr", r"ligation", r"miniprep", r"digest\w*", r"cloning",
                               r"transformation", r"restriction", r"agarose", r"primers?", r"dna", r"rna",
                               r"cdna", r"gel extraction", r"competent"],
    Domain.CELL_CULTURE: [r"passage", r"trypsin\w*", r"dmem", r"rpmi", r"confluen\w*", r"fbs", r"cell culture",
                          r"t-?75", r"t-?25", r"co2", r"seeding", r"transfect\w*", r"cell lines?"],
    Domain.MICROBIOLOGY: [r"bacteria\w*", r"colon(?:y|ies)", r"agar", r"lb", r"od600", r"inoculat\w*",
                          r"streak", r"cfu", r"broth", r"microbial", r"strains?", r"plaques?", r"phages?"],
    Domain.BIOCHEMISTRY: [r"proteins?", r"purification", r"sds-?page", r"enzyme activity", r"assay", r"kinetics",
                          r"dialysis", r"chromatography", r"absorbance", r"bradford", r"his-?tag", r"ni-?nta"],
    Domain.GENOMICS: [r"sequencing", r"librar(?:y|ies)", r"illumina", r"genom\w*", r"ngs", r"reads",
                      r"adapters?", r"nanopore", r"rna-?seq", r"chip-?seq", r"barcod\w*", r"metagenom\w*"],
    Domain.PROTEOMICS: [r"mass spec\w*", r"peptides?", r"lc-?ms", r"ms/ms", r"proteom\w*", r"tmt", r"itraq",
                        r"desalt\w*", r"c18", r"alkylat\w*", r"iodoacetamide"],
    Domain.IMMUNOLOGY: [r"antibod(?:y|ies)", r"elisa", r"flow cytometry", r"facs", r"immuno\w*", r"antigens?",
                        r"t cells?", r"b cells?", r"cytokines?", r"western blot\w*", r"pbmcs?", r"lymphocytes?"],
    Domain.IMAGING: [r"microscop\w*", r"imaging", r"confocal", r"fluorescen\w*", r"slides?", r"coverslips?",
                     r"mount\w*", r"fish", r"dapi", r"image"],
})  # fmt: skip


def _mask(text: str, masked: Iterable[tuple[int, int]]) -> str:
    characters = list(text)
    for start, end in masked:
        for index in range(max(0, start), min(len(characters), end)):
            characters[index] = " "
    return "".join(characters)


def _found(table: list, text: str) -> list:
    """Members whose pattern occurs in `text`; a longer, more specific match hides a generic one inside it."""
    hits: list[tuple[int, int, object]] = []
    for member, pattern in table:
        for match in pattern.finditer(text):
            hits.append((match.start(), match.end(), member))
    hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
    kept: list[object] = []
    covered_until = -1
    for start, end, member in hits:
        if start < covered_until:
            continue
        kept.append(member)
        covered_until = end
    return kept


def _unique_sorted(members: Iterable, enum: type) -> list:
    order = {member: index for index, member in enumerate(enum)}
    return sorted(set(members), key=order.__getitem__)


def equipment_in(text: str, actions: Iterable[tuple[int, int]] = ()) -> list[EquipmentClass]:
    return _unique_sorted(_found(_EQUIPMENT, _mask(text, actions)), EquipmentClass)


def labware_in(text: str, actions: Iterable[tuple[int, int]] = ()) -> list[LabwareClass]:
    return _unique_sorted(_found(_LABWARE, _mask(text, actions)), LabwareClass)


def reagents_in(text: str, actions: Iterable[tuple[int, int]] = ()) -> list[ReagentClass]:
    return _unique_sorted(_found(_REAGENTS, _mask(text, actions)), ReagentClass)


def _best(table: list, text: str, enum: type, minimum: int):
    counts = Counter(member for member, pattern in table for _ in pattern.finditer(text))
    if not counts:
        return None
    order = list(enum)
    member, count = max(counts.items(), key=lambda item: (item[1], -order.index(item[0])))
    return member if count >= minimum else None


def organism_of(text: str) -> Organism:
    """The organism most mentioned, or `unspecified` when none is named."""
    return _best(_ORGANISMS, text, Organism, minimum=1) or Organism.UNSPECIFIED


def domain_of(text: str) -> Domain:
    """The domain whose vocabulary dominates; `other` when no domain has at least two cues."""
    return _best(_DOMAINS, text, Domain, minimum=2) or Domain.OTHER
