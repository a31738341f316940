"""Closed vocabularies: the only words a ProtocolSpec can carry.

A spec has no free-text field anywhere, so the only strings that can leave a partner are the
members of these enums. Adding a member is a contract change (bump the spec schema version once
specs have been published).

The operation list is distilled from X-WLP action types, Autoprotocol instructions (pipette,
dispense, spin, incubate, thermocycle, seal, gel_separate, absorbance, flash_freeze, spread, ...)
and LabOP primitives (Provision, Dispense, Transfer, Incubate, Centrifuge, Vortex, Seal,
Measure*, EmptyContainer, ...): one member per physically distinct manipulation, so that
"pipette up and down", "invert" and "triturate" all become `mix`, while a brief spin and a long
spin are both `centrifuge` told apart by their quantities.
"""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    # moving liquid or material
    ADD = "add"
    TRANSFER = "transfer"
    ALIQUOT = "aliquot"
    REMOVE = "remove"
    DISCARD = "discard"
    # mixing and agitation
    MIX = "mix"
    VORTEX = "vortex"
    SHAKE = "shake"
    # separation
    CENTRIFUGE = "centrifuge"
    FILTER = "filter"
    WASH = "wash"
    ELUTE = "elute"
    PRECIPITATE = "precipitate"
    ELECTROPHORESE = "electrophorese"
    # temperature and time
    INCUBATE = "incubate"
    HEAT = "heat"
    COOL = "cool"
    FREEZE = "freeze"
    THAW = "thaw"
    THERMOCYCLE = "thermocycle"
    DRY = "dry"
    STORE = "store"
    WAIT = "wait"
    # changing the material
    RESUSPEND = "resuspend"
    DILUTE = "dilute"
    DISSOLVE = "dissolve"
    HOMOGENIZE = "homogenize"
    LYSE = "lyse"
    SONICATE = "sonicate"
    STAIN = "stain"
    # cells and organisms
    INOCULATE = "inoculate"
    PLATE = "plate"
    # containers, set-up and reading
    SEAL = "seal"
    PLACE = "place"
    PREPARE = "prepare"
    MEASURE = "measure"
    REPEAT = "repeat"
    OTHER = "other"


class QuantityKind(StrEnum):
    TEMPERATURE = "temperature"
    DURATION = "duration"
    VOLUME = "volume"
    MASS = "mass"
    RELATIVE_VOLUME = "relative_volume"
    CONCENTRATION_MOLAR = "concentration_molar"
    CONCENTRATION_PERCENT = "concentration_percent"
    CONCENTRATION_MASS_PER_VOLUME = "concentration_mass_per_volume"
    CONCENTRATION_FOLD = "concentration_fold"
    RATIO = "ratio"
    ENZYME_ACTIVITY = "enzyme_activity"
    SPEED_RPM = "speed_rpm"
    SPEED_RCF = "speed_rcf"
    PH = "ph"
    CYCLES = "cycles"


class CanonicalUnit(StrEnum):
    """The one unit each quantity kind is normalised to."""

    CELSIUS = "degC"
    SECOND = "s"
    MICROLITRE = "uL"
    MICROGRAM = "ug"
    VOLUMES = "volumes"
    MILLIMOLAR = "mM"
    PERCENT = "percent"
    MG_PER_ML = "mg/mL"
    FOLD = "x"
    RATIO = "ratio"
    UNITS = "U"
    RPM = "rpm"
    TIMES_G = "xg"
    PH = "pH"
    COUNT = "count"


UNIT_OF_KIND: dict[QuantityKind, CanonicalUnit] = {
    QuantityKind.TEMPERATURE: CanonicalUnit.CELSIUS,
    QuantityKind.DURATION: CanonicalUnit.SECOND,
    QuantityKind.VOLUME: CanonicalUnit.MICROLITRE,
    QuantityKind.MASS: CanonicalUnit.MICROGRAM,
    QuantityKind.RELATIVE_VOLUME: CanonicalUnit.VOLUMES,
    QuantityKind.CONCENTRATION_MOLAR: CanonicalUnit.MILLIMOLAR,
    QuantityKind.CONCENTRATION_PERCENT: CanonicalUnit.PERCENT,
    QuantityKind.CONCENTRATION_MASS_PER_VOLUME: CanonicalUnit.MG_PER_ML,
    QuantityKind.CONCENTRATION_FOLD: CanonicalUnit.FOLD,
    QuantityKind.RATIO: CanonicalUnit.RATIO,
    QuantityKind.ENZYME_ACTIVITY: CanonicalUnit.UNITS,
    QuantityKind.SPEED_RPM: CanonicalUnit.RPM,
    QuantityKind.SPEED_RCF: CanonicalUnit.TIMES_G,
    QuantityKind.PH: CanonicalUnit.PH,
    QuantityKind.CYCLES: CanonicalUnit.COUNT,
}


class EquipmentClass(StrEnum):
    CENTRIFUGE = "centrifuge"
    MICROCENTRIFUGE = "microcentrifuge"
    THERMOCYCLER = "thermocycler"
    INCUBATOR = "incubator"
    WATER_BATH = "water_bath"
    HEAT_BLOCK = "heat_block"
    VORTEXER = "vortexer"
    SHAKER = "shaker"
    ROTATOR = "rotator"
    PIPETTE = "pipette"
    SPECTROPHOTOMETER = "spectrophotometer"
    PLATE_READER = "plate_reader"
    FLOW_CYTOMETER = "flow_cytometer"
    GEL_BOX = "gel_box"
    TRANSILLUMINATOR = "transilluminator"
    MAGNET = "magnet"
    SONICATOR = "sonicator"
    HOMOGENIZER = "homogenizer"
    VACUUM_CONCENTRATOR = "vacuum_concentrator"
    AUTOCLAVE = "autoclave"
    BALANCE = "balance"
    PH_METER = "ph_meter"
    ELECTROPORATOR = "electroporator"
    FREEZER = "freezer"
    FRIDGE = "fridge"
    HOOD = "hood"
    MICROSCOPE = "microscope"
    OTHER = "other"


class LabwareClass(StrEnum):
    TUBE = "tube"
    MICROTUBE = "microtube"
    CONICAL_TUBE = "conical_tube"
    PCR_TUBE = "pcr_tube"
    CRYOVIAL = "cryovial"
    PLATE = "plate"
    FLASK = "flask"
    BEAKER = "beaker"
    BOTTLE = "bottle"
    COLUMN = "column"
    DISH = "dish"
    SLIDE = "slide"
    COVERSLIP = "coverslip"
    CUVETTE = "cuvette"
    PIPETTE_TIP = "pipette_tip"
    SYRINGE = "syringe"
    MEMBRANE = "membrane"
    GEL = "gel"
    OTHER = "other"


class ReagentClass(StrEnum):
    BUFFER = "buffer"
    WATER = "water"
    ENZYME = "enzyme"
    NUCLEIC_ACID = "nucleic_acid"
    PRIMER = "primer"
    NUCLEOTIDE = "nucleotide"
    SALT = "salt"
    DETERGENT = "detergent"
    ALCOHOL = "alcohol"
    ORGANIC_SOLVENT = "organic_solvent"
    ACID = "acid"
    BASE = "base"
    CHELATOR = "chelator"
    REDUCING_AGENT = "reducing_agent"
    FIXATIVE = "fixative"
    ANTIBODY = "antibody"
    PROTEIN = "protein"
    SERUM = "serum"
    MEDIUM = "medium"
    ANTIBIOTIC = "antibiotic"
    SUGAR = "sugar"
    DYE = "dye"
    BEADS = "beads"
    CELLS = "cells"
    TISSUE = "tissue"
    KIT_REAGENT = "kit_reagent"
    OTHER = "other"


class Domain(StrEnum):
    MOLECULAR_BIOLOGY = "molecular_biology"
    CELL_CULTURE = "cell_culture"
    MICROBIOLOGY = "microbiology"
    BIOCHEMISTRY = "biochemistry"
    GENOMICS = "genomics"
    PROTEOMICS = "proteomics"
    IMMUNOLOGY = "immunology"
    IMAGING = "imaging"
    OTHER = "other"


class Organism(StrEnum):
    HUMAN = "human"
    MOUSE = "mouse"
    RAT = "rat"
    E_COLI = "e_coli"
    YEAST = "yeast"
    PLANT = "plant"
    DROSOPHILA = "drosophila"
    ZEBRAFISH = "zebrafish"
    C_ELEGANS = "c_elegans"
    XENOPUS = "xenopus"
    VIRUS = "virus"
    OTHER_BACTERIUM = "other_bacterium"
    OTHER = "other"
    UNSPECIFIED = "unspecified"


class Sensitivity(StrEnum):
    """Data sensitivity label of a protocol; caps what may leave whatever the partner's tier."""

    PUBLISHED = "published"
    INTERNAL = "internal"
    EFFICIENCY = "efficiency"
    FULL_IP = "full-ip"
