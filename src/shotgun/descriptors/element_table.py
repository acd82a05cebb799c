"""Build src/shotgun/descriptors/data/elements.csv (94 elements x 58 features).

Sources: matminer's bundled Magpie tables (Ward et al. 2016) and pymatgen's
``Element`` data. Missing melting/boiling points are taken from pymatgen;
any other missing value is filled with the column median over H..Pu. See
src/shotgun/descriptors/data/README.md for units and provenance.

Usage: python -m shotgun.descriptors.element_table   (needs matminer, a test dependency)
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

N_ELEMENTS = 94
OUT = Path(__file__).resolve().parent / "data" / "elements.csv"

MAGPIE_CORE = [
    "Number",
    "MendeleevNumber",
    "AtomicWeight",
    "MeltingT",
    "Column",
    "Row",
    "CovalentRadius",
    "Electronegativity",
    "NsValence",
    "NpValence",
    "NdValence",
    "NfValence",
    "NValence",
    "NsUnfilled",
    "NpUnfilled",
    "NdUnfilled",
    "NfUnfilled",
    "NUnfilled",
    "GSvolume_pa",
    "GSbandgap",
    "GSmagmom",
    "SpaceGroupNumber",
]
# Magpie table name -> column name
MAGPIE_EXTRA = {
    "BoilingT": "BoilingT",
    "Density": "Density",
    "ElectronAffinity": "ElectronAffinity",
    "FirstIonizationEnergy": "FirstIonizationEnergy",
    "SecondIonizationEnergy": "SecondIonizationEnergy",
    "HeatFusion": "HeatFusion",
    "HeatVaporization": "HeatVaporization",
    "HeatCapacityMass": "HeatCapacityMass",
    "HeatCapacityMolar": "HeatCapacityMolar",
    "ICSDVolume": "ICSDVolume",
    "BulkModulus": "BulkModulus",
    "ShearModulus": "ShearModulus",
    "Polarizability": "Polarizability",
    "MiracleRadius": "MiracleRadius",
    "AllenElectronegativity": "AllenElectronegativity",
    "GSenergy_pa": "GSenergy_pa",
    "ZungerPP-r_s": "ZungerPP_r_s",
    "ZungerPP-r_p": "ZungerPP_r_p",
    "ZungerPP-r_d": "ZungerPP_r_d",
    "phi": "MiedemaPhi",
    "n_ws^third": "MiedemaNwsThird",
    "HHIp": "HHIp",
    "HHIr": "HHIr",
}
# column name -> (pymatgen Element attribute, transform)
PYMATGEN = {
    "AtomicRadius": ("atomic_radius", None),
    "AtomicRadiusCalculated": ("atomic_radius_calculated", None),
    "VdWRadius": ("van_der_waals_radius", None),
    "AverageIonicRadius": ("average_ionic_radius", None),
    "AverageCationicRadius": ("average_cationic_radius", None),
    "MetallicRadius": ("metallic_radius", None),
    "MolarVolume": ("molar_volume", None),
    "Log10ElectricalResistivity": ("electrical_resistivity", math.log10),
    "SoundVelocity": ("velocity_of_sound", None),
    "YoungsModulus": ("youngs_modulus", None),
    "ThermalExpansion": ("coefficient_of_linear_thermal_expansion", None),
    "ThermalConductivity": ("thermal_conductivity", None),
    "LiquidRange": ("liquid_range", None),
}

# Magpie column -> pymatgen attribute used where the Magpie value is missing
FALLBACK = {"MeltingT": "melting_point", "BoilingT": "boiling_point"}


def magpie_column(table: str) -> np.ndarray:
    """Values for Z = 1..94 as matminer reads them ('Missing' -> NaN)."""
    from matminer.utils.data import MagpieData

    path = Path(MagpieData(impute_nan=False).data_dir) / f"{table}.table"
    lines = path.read_text().splitlines()
    out = np.full(N_ELEMENTS, np.nan)
    for z in range(1, N_ELEMENTS + 1):
        try:
            out[z - 1] = float(lines[z - 1])
        except (ValueError, IndexError):
            pass
    return out


def pymatgen_column(attr: str, transform) -> np.ndarray:
    from pymatgen.core import Element

    out = np.full(N_ELEMENTS, np.nan)
    for z in range(1, N_ELEMENTS + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                v = float(getattr(Element.from_Z(z), attr))
            except (TypeError, ValueError, AttributeError):
                continue
        # pymatgen reports 0 for unknown radii; a log needs v > 0
        if math.isfinite(v) and not (v <= 0 and (transform is math.log10 or "radius" in attr)):
            out[z - 1] = transform(v) if transform else v
    return out


def build() -> tuple[pd.DataFrame, pd.Series]:
    from pymatgen.core import Element

    cols = {name: magpie_column(name) for name in MAGPIE_CORE}
    cols.update({col: magpie_column(table) for table, col in MAGPIE_EXTRA.items()})
    cols.update({col: pymatgen_column(attr, tf) for col, (attr, tf) in PYMATGEN.items()})
    # Physical fallbacks before median imputation (same units: K).
    for col, attr in FALLBACK.items():
        missing = np.isnan(cols[col])
        cols[col][missing] = pymatgen_column(attr, None)[missing]
    symbols = [Element.from_Z(z).symbol for z in range(1, N_ELEMENTS + 1)]
    raw = pd.DataFrame(cols, index=pd.Index(symbols, name="element"))
    assert raw.shape == (N_ELEMENTS, 58), raw.shape
    n_missing = raw.isna().sum()
    return raw.fillna(raw.median()), n_missing


def main() -> None:
    table, n_missing = build()
    table.to_csv(OUT)  # shortest repr: values round-trip exactly
    print(f"wrote {OUT} {table.shape}")
    print(n_missing[n_missing > 0].to_string())


if __name__ == "__main__":
    main()
