"""The protocol domains the synthesizer writes, one template each, with the knobs that vary.

Each template writes one realistic protocol through a `Writer`: a title, then numbered lines in
a lab's usual order. Its *knobs* (annealing temperature, trypsin time, ligation conditions,
induction temperature, antibody incubation, number of washes, ...) are drawn per protocol, some
of them leaning on the lab's habits (`cold`, `thorough`, `patient`), and optional steps (checks,
clean-ups) come and go. Knobs are what the outcome depends on (`ground_truth.py`): each lands in
a feature the extractor recovers (a temperature or duration bin, a count of washes, `on ice`).

Every line states its intended operations as the extractor's action lexicon names them, and every
number in a line is a phrase, so the draft knows its spec exactly (`protocol.py`). Wording was
checked against the extractor line by line (`tests/corpus/test_fidelity.py` keeps it honest):
phrasings that it reads differently (`Dialyse`, `Replace the medium`, `recover at 37 °C`) are
avoided rather than modelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mshale_fl.corpus.protocol import Draft, Writer
from mshale_fl.schemas.vocabulary import Domain, Operation as Op, Organism

MIN = 60.0
HOUR = 3600.0


@dataclass(frozen=True)
class DomainTemplate:
    key: str
    name: str  # what the domain is, for people reading the manifest
    spec_domain: Domain
    write: Callable[[Writer], Draft]


# ---------------------------------------------------------------- molecular biology


def pcr(w: Writer) -> Draft:
    q = w.q
    gene = w.choice(("GAPDH", "the insert", "ACTB", "the 16S rRNA gene", "the target gene"))
    anneal = w.choice((50, 52, 54, 56, 58, 60, 62, 64))
    extension = w.choice((30, 60, 60, 90, 120))
    cycles = w.choice((25, 30, 30, 35, 40))
    if w.habit("cold"):
        w.step(Op.THAW, "Thaw the primers, dNTPs and {fold} PCR buffer {ice}.", fold=q.fold(10), ice=q.on_ice())
    else:
        w.step(Op.THAW, "Thaw the primers, dNTPs and {fold} PCR buffer at {rt}.", fold=q.fold(10), rt=q.room_temperature())
    w.step(Op.PREPARE, "Prepare a {total} master mix with {buffer} of {fold} buffer, {dntp} of {dntpc} dNTPs, "
           "{primer} of each primer and {taq} of Taq polymerase.", total=q.volume(50), buffer=q.volume(5),
           fold=q.fold(10), dntp=q.volume(1), dntpc=q.millimolar(10), primer=q.volume(w.choice((1, 2.5))),
           taq=q.volume(0.5))  # fmt: skip
    w.step(Op.ADD, "Add {mass} of template DNA to each PCR tube.", mass=q.mass(w.choice((0.01, 0.05, 0.1))))
    if w.habit("cold", 0.6):
        w.step(Op.STORE, "Keep the reactions {ice} until the thermocycler has reached {t}.", ice=q.on_ice(),
               t=q.temperature(95))  # fmt: skip
    w.step(Op.HEAT, "Denature at {t} for {d}.", t=q.temperature(w.choice((94, 95, 98))),
           d=q.duration(w.choice((2, 3, 5)) * MIN))  # fmt: skip
    w.step(Op.THERMOCYCLE, "Run {n} of {t1} for {d1}, {ta} for {d2} and {t3} for {d3}.", n=q.cycles(cycles),
           t1=q.temperature(95), d1=q.duration(30), ta=q.temperature(anneal), d2=q.duration(30),
           t3=q.temperature(72), d3=q.duration(extension))  # fmt: skip
    w.step(Op.INCUBATE, "Incubate at {t} for {d} for the final extension.", t=q.temperature(72),
           d=q.duration(w.choice((5, 7, 10)) * MIN))  # fmt: skip
    w.step(Op.INCUBATE, "Hold at {t}.", t=q.temperature(4))
    if w.habit("thorough"):
        w.line("Load {v} of each reaction on a {pct} agarose gel and run at 100 V for {d}.",
               (Op.ELECTROPHORESE, ("v", "pct")), (Op.ELECTROPHORESE, ("d",)),
               v=q.volume(5), pct=q.percent(w.choice((1, 1.5, 2))), d=q.duration(w.choice((30, 40, 45)) * MIN))  # fmt: skip
        w.step(Op.MEASURE, "Image the gel on a transilluminator.")
    if w.habit("thorough", 0.7):
        w.line("Purify the PCR product with a spin column and elute in {v} of water.",
               (Op.REMOVE, ()), (Op.ELUTE, ("v",)), v=q.volume(w.choice((20, 30, 50))))  # fmt: skip
    title = w.choice((f"PCR amplification of {gene}", f"PCR of {gene} from plasmid DNA", f"Standard Taq PCR for {gene}"))
    return w.draft("pcr", title, Domain.MOLECULAR_BIOLOGY, Organism.UNSPECIFIED)


def cloning(w: Writer) -> Draft:
    q = w.q
    digest = w.choice((1 * HOUR, 2 * HOUR, None)) if not w.habit("patient", 0.4) else None  # None: overnight
    w.step(Op.INCUBATE, "Digest {m} of plasmid DNA with {e1} of EcoRI and {e2} of BamHI at {t} for {d}.",
           m=q.mass(w.choice((1, 2))), e1=q.volume(1), e2=q.volume(1), t=q.temperature(37),
           d=q.overnight() if digest is None else q.duration(digest))  # fmt: skip
    w.step(Op.HEAT, "Heat-inactivate the enzymes at {t} for {d}.", t=q.temperature(w.choice((65, 80))),
           d=q.duration(20 * MIN))  # fmt: skip
    if w.habit("thorough"):
        w.line("Add {v} of alkaline phosphatase and incubate at {t} for {d}.", (Op.ADD, ("v",)),
               (Op.INCUBATE, ("t", "d")), v=q.volume(1), t=q.temperature(37), d=q.duration(30 * MIN))  # fmt: skip
    w.line("Run the digest on a {pct} agarose gel and excise the vector band.", (Op.ELECTROPHORESE, ("pct",)),
           (Op.REMOVE, ()), pct=q.percent(1))  # fmt: skip
    w.step(Op.REMOVE, "Purify the DNA from the gel slice with a spin column.")
    w.step(Op.MIX, "Mix {m} of vector with the insert at a {r} molar ratio.", m=q.mass(0.05),
           r=q.ratio(w.choice((1, 3, 5)), 1))  # fmt: skip
    w.step(Op.ADD, "Add {lig} of T4 DNA ligase and {buf} of {fold} ligase buffer in a total volume of {total}.",
           lig=q.volume(1), buf=q.volume(2), fold=q.fold(10), total=q.volume(20))  # fmt: skip
    ligation = w.choice(("cold_overnight", "room", "quick")) if not w.habit("patient") else "cold_overnight"
    if ligation == "cold_overnight":
        w.step(Op.INCUBATE, "Incubate the ligation at {t} {on}.", t=q.temperature(w.choice((16, 16, 4))), on=q.overnight())
    elif ligation == "room":
        w.step(Op.INCUBATE, "Incubate the ligation at {rt} for {d}.", rt=q.room_temperature(),
               d=q.duration(w.choice((1, 2)) * HOUR))  # fmt: skip
    else:
        w.step(Op.INCUBATE, "Incubate the ligation at {t} for {d}.", t=q.temperature(25), d=q.duration(10 * MIN))
    w.step(Op.THAW, "Thaw {v} of competent E. coli DH5α cells {ice}.", v=q.volume(50), ice=q.on_ice())
    w.line("Add {v} of the ligation to the cells and incubate {ice} for {d}.", (Op.ADD, ("v",)),
           (Op.INCUBATE, ("ice", "d")), v=q.volume(w.choice((2, 5))), ice=q.on_ice(),
           d=q.duration(w.choice((5, 20, 30)) * MIN))  # fmt: skip
    w.step(Op.HEAT, "Heat shock at {t} for {d}.", t=q.temperature(42), d=q.duration(w.choice((30, 45, 60, 90))))
    w.step(Op.PLACE, "Place the tube {ice} for {d}.", ice=q.on_ice(), d=q.duration(2 * MIN))
    if w.habit("thorough", 1.2):
        w.line("Add {v} of SOC medium and incubate at {t} for {d} at {rpm}.", (Op.ADD, ("v",)),
               (Op.INCUBATE, ("t", "d", "rpm")), v=q.volume(950), t=q.temperature(37), d=q.duration(1 * HOUR),
               rpm=q.shaking(w.choice((200, 225, 250))))  # fmt: skip
    w.step(Op.PLATE, "Plate {v} on LB agar with {c} ampicillin.", v=q.volume(100), c=q.mass_per_volume(0.1))
    w.step(Op.INCUBATE, "Incubate the plates at {t} {on}.", t=q.temperature(37), on=q.overnight())
    if w.habit("thorough", 0.6):
        w.line("Pick single colonies and inoculate {v} of LB with ampicillin.", (Op.TRANSFER, ()),
               (Op.INOCULATE, ("v",)), v=q.volume(5000))  # fmt: skip
    title = w.choice(("Restriction cloning of an insert into pUC19", "Subcloning by EcoRI/BamHI digestion and ligation",
                      "Ligation and transformation of a PCR insert"))  # fmt: skip
    return w.draft("cloning", title, Domain.MOLECULAR_BIOLOGY, Organism.E_COLI)


def _dna_source(w: Writer) -> tuple[str, Organism]:
    return w.choice((("mouse tail", Organism.MOUSE), ("human blood", Organism.HUMAN), ("mouse liver", Organism.MOUSE)))


def dna_extraction(w: Writer) -> Draft:
    q = w.q
    source, organism = _dna_source(w)
    w.step(Op.HOMOGENIZE, "Cut {m} of {source} tissue into small pieces.", m=q.mass(w.choice((10_000, 25_000))),
           source=source)  # fmt: skip
    w.step(Op.ADD, "Add {v1} of buffer ATL and {v2} of proteinase K.", v1=q.volume(180), v2=q.volume(20))
    if w.habit("patient"):
        w.step(Op.INCUBATE, "Incubate at {t} {on} in a heat block.", t=q.temperature(56), on=q.overnight())
    else:
        w.step(Op.INCUBATE, "Incubate at {t} for {d} in a heat block.", t=q.temperature(56),
               d=q.duration(w.choice((1, 2, 3)) * HOUR))  # fmt: skip
    if w.habit("thorough"):
        w.line("Add {v} of RNase A ({c}) and incubate for {d} at {rt}.", (Op.ADD, ("v", "c")),
               (Op.INCUBATE, ("d", "rt")), v=q.volume(4), c=q.mass_per_volume(100), d=q.duration(2 * MIN),
               rt=q.room_temperature())  # fmt: skip
    w.step(Op.VORTEX, "Vortex for {d}.", d=q.duration(15))
    w.line("Add {v} of buffer AL and mix by vortexing.", (Op.ADD, ("v",)), (Op.MIX, ()), v=q.volume(200))
    w.line("Add {v} of {pct} ethanol and mix thoroughly.", (Op.ADD, ("v", "pct")), (Op.MIX, ()), v=q.volume(200),
           pct=q.percent(w.choice((96, 100))))  # fmt: skip
    w.line("Transfer the mixture to a spin column and centrifuge at {s} for {d}.", (Op.TRANSFER, ()),
           (Op.CENTRIFUGE, ("s", "d")), s=q.speed(6000), d=q.duration(1 * MIN))  # fmt: skip
    w.step(Op.DISCARD, "Discard the flow-through.")
    w.line("Add {v} of buffer AW1 and centrifuge at {s} for {d}.", (Op.ADD, ("v",)), (Op.CENTRIFUGE, ("s", "d")),
           v=q.volume(500), s=q.speed(6000), d=q.duration(1 * MIN))  # fmt: skip
    w.line("Add {v} of buffer AW2 and centrifuge at {s} for {d}.", (Op.ADD, ("v",)), (Op.CENTRIFUGE, ("s", "d")),
           v=q.volume(500), s=q.speed(20_000), d=q.duration(3 * MIN))  # fmt: skip
    if w.habit("thorough"):
        w.line("Centrifuge the empty column for {d} to dry the membrane.", (Op.CENTRIFUGE, ("d",)), (Op.DRY, ()),
               d=q.duration(1 * MIN))  # fmt: skip
    w.step(Op.PLACE, "Place the column in a clean {v} tube.", v=q.volume(1500))
    w.line("Add {v} of buffer AE pre-warmed to {t} and incubate at {rt} for {d}.", (Op.ADD, ("v", "t")),
           (Op.INCUBATE, ("rt", "d")), v=q.volume(w.choice((50, 100, 200))), t=q.temperature(w.choice((56, 70))),
           rt=q.room_temperature(), d=q.duration(w.choice((1, 5)) * MIN))  # fmt: skip
    w.step(Op.CENTRIFUGE, "Centrifuge at {s} for {d}.", s=q.speed(6000), d=q.duration(1 * MIN))
    if w.habit("thorough"):
        w.step(Op.MEASURE, "Measure the DNA concentration on a NanoDrop.")
    w.step(Op.STORE, "Store the DNA at {t}.", t=q.temperature(w.choice((4, -20, -20))))
    title = w.choice((f"Genomic DNA extraction from {source}", f"DNA isolation from {source} with a spin-column kit"))
    return w.draft("dna_extraction", title, Domain.MOLECULAR_BIOLOGY, organism)


def rna_extraction(w: Writer) -> Draft:
    q = w.q
    source, organism = w.choice((("HeLa cells", Organism.HUMAN), ("HEK293 cells", Organism.HUMAN),
                                 ("mouse liver", Organism.MOUSE)))  # fmt: skip
    cold = w.habit("cold")
    spin_temperature = q.temperature(4) if cold else q.room_temperature()
    w.step(Op.LYSE, "Lyse the {source} in {v} of TRIzol reagent.", source=source, v=q.volume(1000))
    if cold:
        w.step(Op.STORE, "Keep the samples {ice} between steps.", ice=q.on_ice())
    w.step(Op.INCUBATE, "Incubate the homogenate for {d} at {rt}.", d=q.duration(5 * MIN), rt=q.room_temperature())
    w.line("Add {v} of chloroform and shake vigorously for {d}.", (Op.ADD, ("v",)), (Op.SHAKE, ("d",)),
           v=q.volume(200), d=q.duration(15))  # fmt: skip
    w.step(Op.INCUBATE, "Incubate for {d} at {rt}.", d=q.duration(3 * MIN), rt=q.room_temperature())
    w.step(Op.CENTRIFUGE, "Centrifuge at {s} for {d} at {t}.", s=q.speed(12_000), d=q.duration(15 * MIN),
           t=spin_temperature)  # fmt: skip
    w.step(Op.TRANSFER, "Transfer the aqueous phase to a new tube.")
    if w.habit("patient", 0.6):
        w.line("Add {v} of isopropanol and incubate at {t} {on}.", (Op.ADD, ("v",)), (Op.INCUBATE, ("t", "on")),
               v=q.volume(500), t=q.temperature(-20), on=q.overnight())  # fmt: skip
    else:
        w.line("Add {v} of isopropanol and incubate for {d} at {rt}.", (Op.ADD, ("v",)), (Op.INCUBATE, ("d", "rt")),
               v=q.volume(500), d=q.duration(10 * MIN), rt=q.room_temperature())  # fmt: skip
    w.step(Op.CENTRIFUGE, "Centrifuge at {s} for {d} at {t}.", s=q.speed(12_000), d=q.duration(10 * MIN),
           t=q.temperature(4) if cold else q.room_temperature())  # fmt: skip
    w.step(Op.DISCARD, "Discard the supernatant.")
    washes = 2 if w.habit("thorough") else 1
    for _ in range(washes):
        w.step(Op.WASH, "Wash the pellet with {v} of {pct} ethanol.", v=q.volume(1000), pct=q.percent(75))
        w.step(Op.CENTRIFUGE, "Centrifuge at {s} for {d} at {t}.", s=q.speed(7500), d=q.duration(5 * MIN),
               t=q.temperature(4) if cold else q.room_temperature())  # fmt: skip
    w.step(Op.DRY, "Air dry the pellet for {d}.", d=q.duration(w.choice((5, 10, 20, 30)) * MIN))
    w.step(Op.DISSOLVE, "Dissolve the RNA in {v} of RNase-free water.", v=q.volume(w.choice((20, 40, 50))))
    if w.chance(0.5):
        w.step(Op.INCUBATE, "Incubate at {t} for {d}.", t=q.temperature(w.choice((55, 60))), d=q.duration(10 * MIN))
    if w.habit("thorough"):
        w.step(Op.MEASURE, "Measure the RNA concentration on a NanoDrop.")
    w.step(Op.STORE, "Store the RNA at {t}.", t=q.temperature(-80 if w.habit("cold", 1.2) else -20))
    title = w.choice((f"Total RNA extraction from {source} with TRIzol", f"TRIzol RNA isolation ({source})"))
    return w.draft("rna_extraction", title, Domain.MOLECULAR_BIOLOGY, organism)


# ---------------------------------------------------------------- cell culture

_CELL_LINES = (("HEK293", Organism.HUMAN), ("HeLa", Organism.HUMAN), ("A549", Organism.HUMAN),
               ("MCF-7", Organism.HUMAN), ("NIH 3T3", Organism.MOUSE))  # fmt: skip


def cell_culture(w: Writer) -> Draft:
    q = w.q
    line, organism = w.choice(_CELL_LINES)
    if w.habit("thorough"):
        w.step(Op.MEASURE, "Check the confluence of the {line} cells under the microscope.", line=line)
    if w.habit("thorough", 1.2):
        w.step(Op.HEAT, "Pre-warm the DMEM with {fbs} FBS and the trypsin to {t} in a water bath.",
               fbs=q.percent(10), t=q.temperature(37))  # fmt: skip
    w.step(Op.REMOVE, "Aspirate the medium from the T-75 flask.")
    if w.habit("thorough"):
        w.step(Op.WASH, "Wash the cells {n} with {v} of PBS.", n=q.times(2), v=q.volume(5000))
    else:
        w.step(Op.WASH, "Wash the cells with {v} of PBS.", v=q.volume(5000))
    w.line("Add {v} of {pct} trypsin-EDTA and incubate at {t} for {d}.", (Op.ADD, ("v", "pct")),
           (Op.INCUBATE, ("t", "d")), v=q.volume(w.choice((1000, 2000))), pct=q.percent(w.choice((0.05, 0.25))),
           t=q.temperature(37), d=q.duration(w.choice((2, 3, 5, 10, 15)) * MIN))  # fmt: skip
    w.step(Op.ADD, "Neutralize the trypsin with {v} of complete DMEM.", v=q.volume(8000))
    w.step(Op.TRANSFER, "Transfer the cell suspension to a {v} conical tube.", v=q.volume(15_000))
    w.step(Op.CENTRIFUGE, "Centrifuge at {s} for {d}.", s=q.speed(w.choice((200, 300, 300, 400, 1000, 1500))),
           d=q.duration(5 * MIN))  # fmt: skip
    w.line("Discard the supernatant and resuspend the pellet in {v} of fresh medium.", (Op.DISCARD, ()),
           (Op.RESUSPEND, ("v",)), v=q.volume(10_000))  # fmt: skip
    if w.habit("thorough"):
        w.step(Op.MEASURE, "Count the cells with a haemocytometer and trypan blue.")
    w.step(Op.PLATE, "Seed the cells at a {r} ratio into new flasks.", r=q.ratio(1, w.choice((4, 6, 8, 10, 20))))
    w.step(Op.INCUBATE, "Incubate at {t} with {co2} CO2.", t=q.temperature(37), co2=q.percent(5))
    title = w.choice((f"Passaging {line} cells", f"Subculture of adherent {line} cells", f"{line} cell line passage"))
    return w.draft("cell_culture", title, Domain.CELL_CULTURE, organism)


def transfection(w: Writer) -> Draft:
    q = w.q
    line, organism = w.choice(_CELL_LINES[:4])
    w.step(Op.PLATE, "Seed {line} cells in a 6-well plate the day before transfection.", line=line)
    w.step(Op.INOCULATE, "Transfect the cells at {pct} confluence.", pct=q.percent(w.choice((50, 60, 70, 80, 90))))
    w.step(Op.DILUTE, "Dilute {m} of plasmid DNA in {v} of Opti-MEM.", m=q.mass(w.choice((1, 2, 2.5, 4))),
           v=q.volume(100))  # fmt: skip
    w.step(Op.DILUTE, "Dilute {v} of transfection reagent in {v2} of Opti-MEM.", v=q.volume(w.choice((3, 6, 9))),
           v2=q.volume(100))  # fmt: skip
    w.line("Combine the two dilutions and incubate for {d} at {rt}.", (Op.TRANSFER, ()), (Op.INCUBATE, ("d", "rt")),
           d=q.duration(w.choice((5, 10, 15, 20, 30, 45)) * MIN), rt=q.room_temperature())  # fmt: skip
    w.step(Op.ADD, "Add the complexes dropwise to the cells.")
    w.step(Op.INCUBATE, "Incubate the cells at {t} with {co2} CO2.", t=q.temperature(37), co2=q.percent(5))
    if w.habit("thorough"):
        w.line("Remove the medium after {d} and add {v} of fresh complete medium.", (Op.REMOVE, ("d",)),
               (Op.ADD, ("v",)), d=q.duration(w.choice((4, 6, 8)) * HOUR), v=q.volume(2000))  # fmt: skip
    if w.habit("thorough", 0.8):
        w.step(Op.MEASURE, "Check the transfection efficiency by fluorescence microscopy.")
    harvest = w.choice((36, 48, 48, 72)) if w.habit("patient") else w.choice((16, 20, 24, 36))
    w.step(Op.TRANSFER, "Harvest the cells after {d}.", d=q.duration(harvest * HOUR))
    if w.habit("cold"):
        w.step(Op.WASH, "Wash the cells {n} with cold PBS.", n=q.times(2))
        w.step(Op.LYSE, "Lyse the cells in {v} of RIPA buffer {ice} for {d}.", v=q.volume(200), ice=q.on_ice(),
               d=q.duration(15 * MIN))  # fmt: skip
    title = w.choice((f"Lipofection of {line} cells with plasmid DNA", f"Transient transfection of {line} cells",
                      f"Plasmid transfection in a 6-well format ({line})"))  # fmt: skip
    return w.draft("transfection", title, Domain.CELL_CULTURE, organism)


# ---------------------------------------------------------------- biochemistry


def protein_purification(w: Writer) -> Draft:
    q = w.q
    w.step(Op.INOCULATE, "Transform the expression plasmid into E. coli BL21(DE3).")
    w.line("Inoculate {v} of TB medium with {c} kanamycin from a single colony and grow at {t} {on}.",
           (Op.INOCULATE, ("v", "c")), (Op.INCUBATE, ("t", "on")), v=q.volume(10_000), c=q.mass_per_volume(0.05),
           t=q.temperature(37), on=q.overnight())  # fmt: skip
    w.step(Op.DILUTE, "Dilute the starter culture {r} into {v} of TB medium.", r=q.ratio(1, 100), v=q.volume(1_000_000))
    w.step(Op.INCUBATE, "Incubate at {t} at {rpm} until the A600 reaches 0.6.", t=q.temperature(37),
           rpm=q.shaking(w.choice((180, 200, 220))))  # fmt: skip
    induction = "cold" if w.habit("cold") else w.choice(("warm", "hot", "cold"))
    if induction == "cold":
        w.step(Op.COOL, "Chill the culture {ice} for {d}.", ice=q.on_ice(), d=q.duration(w.choice((15, 20, 30)) * MIN))
    w.step(Op.INCUBATE, "Induce expression with {c} IPTG.", c=q.millimolar(w.choice((0.1, 0.2, 0.5, 1))))
    if induction == "cold":
        w.step(Op.INCUBATE, "Incubate at {t} {on}.", t=q.temperature(w.choice((16, 18, 20))), on=q.overnight())
    elif induction == "warm":
        w.step(Op.INCUBATE, "Incubate at {t} for {d}.", t=q.temperature(25), d=q.duration(w.choice((4, 5, 6)) * HOUR))
    else:
        w.step(Op.INCUBATE, "Incubate at {t} for {d}.", t=q.temperature(37), d=q.duration(w.choice((3, 4)) * HOUR))
    w.step(Op.CENTRIFUGE, "Pellet the cells at {s} for {d} at {t}.", s=q.speed(5000), d=q.duration(15 * MIN),
           t=q.temperature(4))  # fmt: skip
    w.step(Op.RESUSPEND, "Resuspend the pellet in {v} of lysis buffer ({tris} Tris {ph}, {nacl} NaCl, {imid} imidazole).",
           v=q.volume(30_000), tris=q.millimolar(50), ph=q.ph(8.0), nacl=q.millimolar(300), imid=q.millimolar(10))  # fmt: skip
    if w.habit("thorough"):
        w.line("Add {c} lysozyme and incubate {ice} for {d}.", (Op.ADD, ("c",)), (Op.INCUBATE, ("ice", "d")),
               c=q.mass_per_volume(1), ice=q.on_ice(), d=q.duration(30 * MIN))  # fmt: skip
    if w.habit("cold", 1.3):
        w.step(Op.LYSE, "Lyse the cells by sonication {ice}, {n} of {on} on and {off} off.", ice=q.on_ice(),
               n=q.cycles(w.choice((6, 10, 12))), on=q.duration(10), off=q.duration(20))  # fmt: skip
    else:
        w.step(Op.SONICATE, "Sonicate for {n} of {on} on and {off} off.", n=q.cycles(w.choice((6, 10, 12))),
               on=q.duration(10), off=q.duration(20))  # fmt: skip
    w.step(Op.CENTRIFUGE, "Centrifuge the lysate at {s} for {d} at {t}.", s=q.speed(20_000), d=q.duration(30 * MIN),
           t=q.temperature(4))  # fmt: skip
    w.step(Op.TRANSFER, "Load the supernatant onto a {v} Ni-NTA column.", v=q.volume(1000))
    w.step(Op.WASH, "Wash the column with {v} of wash buffer containing {c} imidazole.", v=q.volume(20_000),
           c=q.millimolar(w.choice((10, 20, 40))))  # fmt: skip
    w.step(Op.ELUTE, "Elute the protein with {v} of elution buffer containing {c} imidazole.", v=q.volume(5000),
           c=q.millimolar(w.choice((250, 300, 500))))  # fmt: skip
    if w.habit("patient"):
        w.step(Op.FILTER, "Dialyze the eluate against {v} of PBS {on} at {t}.", v=q.volume(2_000_000), on=q.overnight(),
               t=q.temperature(4))  # fmt: skip
    if w.habit("thorough"):
        w.step(Op.ELECTROPHORESE, "Run {v} of each fraction on a {pct} SDS-PAGE gel.", v=q.volume(10),
               pct=q.percent(w.choice((10, 12, 15))))  # fmt: skip
        w.step(Op.MEASURE, "Measure the protein concentration by Bradford assay.")
    w.step(Op.STORE, "Store the purified protein at {t}.", t=q.temperature(w.choice((-80, 4)) if w.habit("cold") else 4))
    title = w.choice(("Expression and Ni-NTA purification of a His-tagged protein",
                      "His-tag protein purification from E. coli", "Recombinant protein expression and purification"))  # fmt: skip
    return w.draft("protein_purification", title, Domain.BIOCHEMISTRY, Organism.E_COLI)


# ---------------------------------------------------------------- immunology and imaging


def _washes(w: Writer, what: str, each: bool = True) -> None:
    q = w.q
    count = w.choice((3, 4, 5)) if w.habit("thorough") else w.choice((2, 3))
    if each:
        w.step(Op.WASH, f"Wash the {what} {{n}} for {{d}} each with TBST.", n=q.times(count),
               d=q.duration(w.choice((5, 10)) * MIN))  # fmt: skip
    else:
        w.step(Op.WASH, f"Wash the {what} {{n}} with {{v}} of wash buffer per well.", n=q.times(count),
               v=q.volume(w.choice((200, 300))))  # fmt: skip


def western_blot(w: Writer) -> Draft:
    q = w.q
    source, organism = w.choice((("HeLa", Organism.HUMAN), ("HEK293", Organism.HUMAN), ("NIH 3T3", Organism.MOUSE)))
    target = w.choice(("GAPDH", "beta-actin", "phospho-ERK", "the target"))
    w.step(Op.LYSE, "Lyse the {source} cells in {v} of RIPA buffer {ice} for {d}.", source=source, v=q.volume(200),
           ice=q.on_ice(), d=q.duration(w.choice((15, 30)) * MIN))  # fmt: skip
    w.step(Op.CENTRIFUGE, "Centrifuge the lysate at {s} for {d} at {t}.", s=q.speed(14_000), d=q.duration(15 * MIN),
           t=q.temperature(4))  # fmt: skip
    if w.habit("thorough"):
        w.step(Op.MEASURE, "Measure the concentration of each lysate with a BCA assay.")
    w.line("Mix {m} of lysate with {fold} Laemmli buffer and boil at {t} for {d}.", (Op.MIX, ("m", "fold")),
           (Op.HEAT, ("t", "d")), m=q.mass(w.choice((20, 30, 40))), fold=q.fold(4), t=q.temperature(95),
           d=q.duration(5 * MIN))  # fmt: skip
    w.step(Op.ELECTROPHORESE, "Run the samples on a {pct} SDS-PAGE gel at 150 V for {d}.",
           pct=q.percent(w.choice((8, 10, 12))), d=q.duration(1 * HOUR))  # fmt: skip
    w.step(Op.TRANSFER, "Transfer to a PVDF membrane at 100 V for {d}.", d=q.duration(w.choice((1, 1.5)) * HOUR))
    if w.habit("patient", 0.5):
        w.step(Op.INCUBATE, "Block the membrane in {pct} milk in TBST {on} at {t}.", pct=q.percent(5), on=q.overnight(),
               t=q.temperature(4))  # fmt: skip
    else:
        w.step(Op.INCUBATE, "Block the membrane in {pct} milk in TBST for {d} at {rt}.", pct=q.percent(5),
               d=q.duration(w.choice((30, 60, 120)) * MIN), rt=q.room_temperature())  # fmt: skip
    w.step(Op.DILUTE, "Dilute the primary antibody against {target} {r} in {pct} BSA.", target=target,
           r=q.ratio(1, w.choice((500, 1000, 2000, 5000))), pct=q.percent(5))  # fmt: skip
    if w.habit("patient"):
        w.step(Op.INCUBATE, "Incubate the membrane with the primary antibody {on} at {t}.", on=q.overnight(),
               t=q.temperature(4))  # fmt: skip
    else:
        w.step(Op.INCUBATE, "Incubate the membrane with the primary antibody for {d} at {rt}.",
               d=q.duration(w.choice((1, 2)) * HOUR), rt=q.room_temperature())  # fmt: skip
    _washes(w, "membrane")
    w.step(Op.INCUBATE, "Incubate with the HRP-conjugated secondary antibody ({r}) for {d} at {rt}.",
           r=q.ratio(1, w.choice((2000, 5000, 10000))), d=q.duration(1 * HOUR), rt=q.room_temperature())  # fmt: skip
    _washes(w, "membrane")
    w.step(Op.INCUBATE, "Develop the blot with ECL substrate for {d}.", d=q.duration(w.choice((1, 2, 5)) * MIN))
    w.step(Op.MEASURE, "Image the blot on a chemiluminescence imager.")
    title = w.choice((f"Western blot for {target} in {source} cells", f"Immunoblotting of {target} ({source} lysates)"))
    return w.draft("western_blot", title, Domain.IMMUNOLOGY, organism)


def elisa(w: Writer) -> Draft:
    q = w.q
    analyte = w.choice(("IL-6", "TNF-alpha", "IFN-gamma", "IL-8"))
    w.step(Op.ADD, "Coat a 96-well plate with {v} per well of capture antibody at {c} in PBS.", v=q.volume(100),
           c=q.mass_per_volume(w.choice((0.001, 0.002, 0.004))))  # fmt: skip
    if w.habit("patient"):
        w.step(Op.INCUBATE, "Incubate the plate {on} at {t}.", on=q.overnight(), t=q.temperature(4))
    else:
        w.step(Op.INCUBATE, "Incubate the plate for {d} at {t}.", d=q.duration(2 * HOUR), t=q.temperature(37))
    _washes(w, "plate", each=False)
    w.step(Op.INCUBATE, "Block with {v} of {pct} BSA in PBS for {d} at {rt}.", v=q.volume(200),
           pct=q.percent(w.choice((1, 3))), d=q.duration(1 * HOUR), rt=q.room_temperature())  # fmt: skip
    _washes(w, "plate", each=False)
    warm = w.chance(0.4)
    w.line("Add {v} of standards and human serum samples to the wells and incubate for {d} at {t}.", (Op.ADD, ("v",)),
           (Op.INCUBATE, ("d", "t")), v=q.volume(100), d=q.duration(w.choice((1, 2)) * HOUR),
           t=q.temperature(37) if warm else q.room_temperature())  # fmt: skip
    _washes(w, "plate", each=False)
    w.line("Add {v} of biotinylated detection antibody and incubate for {d} at {rt}.", (Op.ADD, ("v",)),
           (Op.INCUBATE, ("d", "rt")), v=q.volume(100), d=q.duration(1 * HOUR), rt=q.room_temperature())  # fmt: skip
    _washes(w, "plate", each=False)
    w.line("Add {v} of streptavidin-HRP ({r}) and incubate for {d} at {rt} in the dark.", (Op.ADD, ("v", "r")),
           (Op.INCUBATE, ("d", "rt")), v=q.volume(100), r=q.ratio(1, 200), d=q.duration(20 * MIN),
           rt=q.room_temperature())  # fmt: skip
    _washes(w, "plate", each=False)
    w.line("Add {v} of TMB substrate and incubate for {d} in the dark.", (Op.ADD, ("v",)), (Op.INCUBATE, ("d",)),
           v=q.volume(100), d=q.duration(w.choice((5, 10, 15, 20, 30)) * MIN))  # fmt: skip
    w.step(Op.WAIT, "Stop the reaction with {v} of {c} H2SO4.", v=q.volume(50), c=q.millimolar(2000))
    w.step(Op.MEASURE, "Read the absorbance at 450 nm on a plate reader within {d}.", d=q.duration(30 * MIN))
    title = w.choice((f"Sandwich ELISA for human {analyte}", f"Human {analyte} ELISA in serum samples"))
    return w.draft("elisa", title, Domain.IMMUNOLOGY, Organism.HUMAN)


def immunofluorescence(w: Writer) -> Draft:
    q = w.q
    line, organism = w.choice(_CELL_LINES)
    w.step(Op.PLATE, "Seed {line} cells on glass coverslips in a 24-well plate.", line=line)
    w.step(Op.WASH, "Wash the cells {n} with PBS.", n=q.times(2))
    if w.habit("cold", 0.7):
        w.step(Op.INCUBATE, "Fix the cells with ice-cold methanol at {t} for {d}.", t=q.temperature(-20),
               d=q.duration(10 * MIN))  # fmt: skip
    else:
        w.step(Op.INCUBATE, "Fix the cells in {pct} PFA for {d} at {rt}.", pct=q.percent(4),
               d=q.duration(w.choice((10, 15, 20)) * MIN), rt=q.room_temperature())  # fmt: skip
    w.step(Op.WASH, "Wash the coverslips {n} with PBS.", n=q.times(w.choice((3, 4, 5)) if w.habit("thorough") else 3))
    w.step(Op.INCUBATE, "Permeabilize with {pct} Triton X-100 in PBS for {d}.", pct=q.percent(w.choice((0.1, 0.2, 0.5))),
           d=q.duration(10 * MIN))  # fmt: skip
    w.step(Op.INCUBATE, "Block in {pct} normal goat serum for {d} at {rt}.", pct=q.percent(5),
           d=q.duration(w.choice((30, 60)) * MIN), rt=q.room_temperature())  # fmt: skip
    if w.habit("patient"):
        w.step(Op.INCUBATE, "Incubate with the primary antibody ({r}) {on} at {t}.", r=q.ratio(1, w.choice((100, 200, 500))),
               on=q.overnight(), t=q.temperature(4))  # fmt: skip
    else:
        w.step(Op.INCUBATE, "Incubate with the primary antibody ({r}) for {d} at {rt}.",
               r=q.ratio(1, w.choice((100, 200, 500))), d=q.duration(1 * HOUR), rt=q.room_temperature())  # fmt: skip
    w.step(Op.WASH, "Wash the coverslips {n} with PBS.", n=q.times(3))
    w.step(Op.INCUBATE, "Incubate with the fluorescent secondary antibody ({r}) for {d} at {rt} in the dark.",
           r=q.ratio(1, w.choice((500, 1000))), d=q.duration(1 * HOUR), rt=q.room_temperature())  # fmt: skip
    w.step(Op.STAIN, "Stain the nuclei with DAPI ({c}) for {d}.", c=q.mass_per_volume(0.001),
           d=q.duration(w.choice((5, 10)) * MIN))  # fmt: skip
    w.step(Op.PLACE, "Mount the coverslips on glass slides with mounting medium.")
    w.step(Op.MEASURE, "Image the slides on a confocal microscope.")
    title = w.choice((f"Immunofluorescence staining of {line} cells on coverslips",
                      f"Confocal imaging of fixed {line} cells"))  # fmt: skip
    return w.draft("immunofluorescence", title, Domain.IMAGING, organism)


# ---------------------------------------------------------------- microbiology


def competent_cells(w: Writer) -> Draft:
    q = w.q
    w.line("Streak E. coli DH5α from a glycerol stock onto an LB agar plate and grow at {t} {on}.", (Op.PLATE, ()),
           (Op.INCUBATE, ("t", "on")), t=q.temperature(37), on=q.overnight())  # fmt: skip
    w.line("Inoculate {v} of LB broth with a single colony and grow {on} at {t} at {rpm}.", (Op.INOCULATE, ("v",)),
           (Op.INCUBATE, ("on", "t", "rpm")), v=q.volume(5000), on=q.overnight(), t=q.temperature(37),
           rpm=q.shaking(w.choice((200, 250))))  # fmt: skip
    w.step(Op.DILUTE, "Dilute the culture {r} into {v} of LB.", r=q.ratio(1, 100), v=q.volume(100_000))
    w.step(Op.INCUBATE, "Incubate at {t} at {rpm} until the OD600 of the bacteria reaches 0.4.",
           t=q.temperature(w.choice((37, 30))), rpm=q.shaking(200))  # fmt: skip
    if w.habit("cold"):
        w.step(Op.COOL, "Chill the culture {ice} for {d}.", ice=q.on_ice(), d=q.duration(w.choice((10, 20, 30)) * MIN))
    spin = q.temperature(4) if w.habit("cold", 1.2) else q.room_temperature()
    w.step(Op.CENTRIFUGE, "Centrifuge at {s} for {d} at {t}.", s=q.speed(w.choice((3000, 4000))), d=q.duration(10 * MIN),
           t=spin)  # fmt: skip
    w.step(Op.RESUSPEND, "Resuspend the cells gently in {v} of ice-cold {c} CaCl2.", v=q.volume(20_000),
           c=q.millimolar(100))  # fmt: skip
    w.step(Op.INCUBATE, "Incubate {ice} for {d}.", ice=q.on_ice(), d=q.duration(w.choice((10, 30, 60)) * MIN))
    w.step(Op.CENTRIFUGE, "Centrifuge at {s} for {d} at {t}.", s=q.speed(w.choice((3000, 4000))), d=q.duration(10 * MIN),
           t=q.temperature(4))  # fmt: skip
    w.step(Op.RESUSPEND, "Resuspend the pellet in {v} of ice-cold {c} CaCl2 with {pct} glycerol.", v=q.volume(2000),
           c=q.millimolar(100), pct=q.percent(15))  # fmt: skip
    w.step(Op.ALIQUOT, "Aliquot {v} into pre-chilled tubes.", v=q.volume(w.choice((50, 100))))
    w.line("Freeze the aliquots in liquid nitrogen and store at {t}.", (Op.FREEZE, ()), (Op.STORE, ("t",)),
           t=q.temperature(-80))  # fmt: skip
    if w.habit("thorough"):
        w.step(Op.MEASURE, "Check the competence of the strain with a control plasmid on LB agar.")
    title = w.choice(("Chemically competent E. coli (CaCl2 method)", "Preparation of competent DH5α bacteria"))
    return w.draft("competent_cells", title, Domain.MICROBIOLOGY, Organism.E_COLI)


DOMAINS: dict[str, DomainTemplate] = {
    template.key: template
    for template in (
        DomainTemplate("pcr", "PCR amplification", Domain.MOLECULAR_BIOLOGY, pcr),
        DomainTemplate("cloning", "restriction cloning, ligation and transformation", Domain.MOLECULAR_BIOLOGY, cloning),
        DomainTemplate("dna_extraction", "genomic DNA extraction (spin column)", Domain.MOLECULAR_BIOLOGY, dna_extraction),
        DomainTemplate("rna_extraction", "total RNA extraction (TRIzol)", Domain.MOLECULAR_BIOLOGY, rna_extraction),
        DomainTemplate("cell_culture", "passaging adherent cell lines", Domain.CELL_CULTURE, cell_culture),
        DomainTemplate("transfection", "transient transfection (lipofection)", Domain.CELL_CULTURE, transfection),
        DomainTemplate("protein_purification", "protein expression and Ni-NTA purification", Domain.BIOCHEMISTRY,
                       protein_purification),
        DomainTemplate("western_blot", "western blot", Domain.IMMUNOLOGY, western_blot),
        DomainTemplate("elisa", "sandwich ELISA", Domain.IMMUNOLOGY, elisa),
        DomainTemplate("immunofluorescence", "immunofluorescence staining and imaging", Domain.IMAGING, immunofluorescence),
        DomainTemplate("competent_cells", "chemically competent E. coli", Domain.MICROBIOLOGY, competent_cells),
    )
}  # fmt: skip
"""Every domain the synthesizer knows, by key (the keys the manifest's domain mixes use)."""
