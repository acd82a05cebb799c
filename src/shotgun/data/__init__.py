"""Source data: declarations, input parsing, cleaning with a quarantine, cleaning summaries.

A dataset is declared by a YAML file (``config/datasets/qm9.yaml`` explains the keys,
``dataset.schema.json`` is the schema). ``prepare`` turns its raw table into one parquet file per
property, a ``quarantine.csv`` of every rejected (row, property) pair with a reason code and a
``report.json`` whose counts add up. Inputs of each material class are read by one parser
(:mod:`shotgun.data.inputs`), shared with the descriptors; :func:`check_kinds` checks a column of
inputs against the kinds a model or a transfer run expects.

Declarations load without pandas (the Snakefile reads them); cleaning loads it on first use.
"""

from ..lazy import lazy_exports
from .declarations import (
    DATASET_CLASSES,
    Dataset,
    DatasetError,
    Property,
    load_dataset,
    load_datasets,
    read_yaml,
    validate_declaration,
)
from .inputs import (
    KIND_NOUNS,
    InputKindError,
    InputKindWarning,
    KindCheck,
    canonical_hashes,
    canonicalize,
    check_kinds,
    input_hashes,
    input_list,
    parse_formula,
    parse_smiles,
    parse_structure,
    reads_as,
    structure_to_input,
)

__all__ = [
    "DATASET_CLASSES",
    "KIND_NOUNS",
    "Dataset",
    "DatasetError",
    "InputKindError",
    "InputKindWarning",
    "KindCheck",
    "Property",
    "canonical_hashes",
    "canonicalize",
    "check_kinds",
    "input_hashes",
    "clean",
    "default_cache_dir",
    "input_list",
    "list_records",
    "load_dataset",
    "load_datasets",
    "parse_formula",
    "parse_smiles",
    "parse_structure",
    "prepare",
    "read_columns",
    "read_table",
    "read_yaml",
    "reads_as",
    "scaffold",
    "structure_to_input",
    "summarize",
    "validate_declaration",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "clean": ".cleaning",
        "prepare": ".cleaning",
        "read_columns": ".tables",
        "read_table": ".tables",
        "read_strings": ".tables",
        "default_cache_dir": ".summaries",
        "list_records": ".summaries",
        "summarize": ".summaries",
        "scaffold": ".scaffold",
        "guess_input": ".scaffold",
    },
)
