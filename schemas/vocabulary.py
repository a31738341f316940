"""Closed vocabularies: the only words a ProtocolSpec can carry.

A spec has no free-text field anywhere, so the only strings that can leave a partner are the
members of these enums. Adding a member is a contract change (bump the spec schema version).
The operation list is distilled from X-WLP action types, Autoprotocol instructions and LabOP
primitives.
"""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    ADD = "add"
    TRANSFER = "transfer"
    MIX = "mix"
    VORTEX = "vortex"
    CENTRIFUGE = "centrifuge"
    INCUBATE = "incubate"
    THERMOCYCLE = "thermocycle"
    WASH = "wash"
    ELUTE = "elute"
    DISCARD = "discard"
    RESUSPEND = "resuspend"
    DILUTE = "dilute"
    HEAT = "heat"
    COOL = "cool"
    FREEZE = "freeze"
    THAW = "thaw"
    DRY = "dry"
    FILTER = "filter"
    MEASURE = "measure"
    SEAL = "seal"
    UNSEAL = "unseal"
    SHAKE = "shake"
    SPIN_DOWN = "spin_down"
    PELLET = "pellet"
    LYSE = "lyse"
    PRECIPITATE = "precipitate"
    DISSOLVE = "dissolve"
    STORE = "store"
    LABEL = "label"
    HOMOGENIZE = "homogenize"
    ELECTROPHORESE = "electrophorese"
    SONICATE = "sonicate"
    INOCULATE = "inoculate"
    PLATE = "plate"
    WAIT = "wait"
    OTHER = "other"


class QuantityKind(StrEnum):
    TEMPERATURE = "temperature"
    DURATION = "duration"
    VOLUME = "volume"
    MASS = "mass"
    CONCENTRATION_MOLAR = "concentration_molar"
    CONCENTRATION_PERCENT = "concentration_percent"
    CONCENTRATION_MASS_PER_VOLUME = "concentration_mass_per_volume"
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
    MILLIMOLAR = "mM"
    PERCENT = "percent"
    MG_PER_ML = "mg/mL"
    RPM = "rpm"
    TIMES_G = "xg"
    PH = "pH"
    COUNT = "count"


UNIT_OF_KIND: dict[QuantityKind, CanonicalUnit] = {
    QuantityKind.TEMPERATURE: CanonicalUnit.CELSIUS,
    QuantityKind.DURATION: CanonicalUnit.SECOND,
    QuantityKind.VOLUME: CanonicalUnit.MICROLITRE,
    QuantityKind.MASS: CanonicalUnit.MICROGRAM,
    QuantityKind.CONCENTRATION_MOLAR: CanonicalUnit.MILLIMOLAR,
    QuantityKind.CONCENTRATION_PERCENT: CanonicalUnit.PERCENT,
    QuantityKind.CONCENTRATION_MASS_PER_VOLUME: CanonicalUnit.MG_PER_ML,
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
    PIPETTE = "pipette"
    SPECTROPHOTOMETER = "spectrophotometer"
    PLATE_READER = "plate_reader"
    GEL_BOX = "gel_box"
    MAGNET = "magnet"
    SONICATOR = "sonicator"
    FREEZER = "freezer"
    FRIDGE = "fridge"
    HOOD = "hood"
    MICROSCOPE = "microscope"
    OTHER = "other"


class LabwareClass(StrEnum):
    TUBE = "tube"
    MICROTUBE = "microtube"
    PCR_TUBE = "pcr_tube"
    PLATE = "plate"
    FLASK = "flask"
    BEAKER = "beaker"
    COLUMN = "column"
    DISH = "dish"
    SLIDE = "slide"
    BOTTLE = "bottle"
    CUVETTE = "cuvette"
    OTHER = "other"


class ReagentClass(StrEnum):
    BUFFER = "buffer"
    WATER = "water"
    ENZYME = "enzyme"
    NUCLEIC_ACID = "nucleic_acid"
    PRIMER = "primer"
    SALT = "salt"
    DETERGENT = "detergent"
    ALCOHOL = "alcohol"
    ACID = "acid"
    BASE = "base"
    ANTIBODY = "antibody"
    MEDIUM = "medium"
    ANTIBIOTIC = "antibiotic"
    DYE = "dye"
    BEADS = "beads"
    SOLVENT = "solvent"
    PROTEIN = "protein"
    CELLS = "cells"
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
