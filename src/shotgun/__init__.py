"""shotgun: a factory of pretrained materials-property models for shotgun transfer learning."""

__version__ = "0.1.0"
MATERIAL_CLASSES = ("molecule", "polymer", "inorganic")
# Input kinds a descriptor can accept: the material classes plus crystal structures
# (JSON strings of pymatgen Structure dicts).
INPUT_KINDS = tuple(dict.fromkeys(MATERIAL_CLASSES + ("structure",)))
